"""Benchmark statistics on synthetic timings, report generation, README section update."""
import json

import numpy as np
import pytest

from emnist_edge.benchmarks.cli import update_readme
from emnist_edge.benchmarks.stats import ratio, summarize, time_calls


def test_percentiles_and_throughput():
    t = np.arange(1, 101) / 1000.0  # 1..100 ms
    s = summarize(t, batch=1)
    assert s["runs"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["images_per_s"] == pytest.approx(1000 / 50.5)


def test_batch_divides_per_image_time():
    s = summarize([0.256] * 5, batch=256)
    assert s["ms_per_image"] == pytest.approx(1.0) and s["images_per_s"] == pytest.approx(1000)


def test_ratio_is_per_image_and_uses_medians():
    keras = summarize([0.064, 0.064, 5.0], batch=1)  # one outlier must not move the median
    tfl = summarize([0.000032] * 3, batch=1)
    assert ratio(keras, tfl) == pytest.approx(2000)
    big = summarize([0.01] * 3, batch=100)
    assert ratio(keras, big) == pytest.approx(640)


def test_time_calls_meets_both_minimums():
    clock = iter(np.arange(0, 1000, 0.01)).__next__  # every call takes 10 ms on this fake clock
    times = time_calls(lambda: None, warmup=2, min_runs=5, min_seconds=0.2, clock=clock)
    assert len(times) == 20 and all(t == pytest.approx(0.01) for t in times)
    clock = iter(np.arange(0, 1000, 0.5)).__next__
    assert len(time_calls(lambda: None, warmup=0, min_runs=5, min_seconds=0.2, clock=clock)) == 5


def test_summarize_refuses_nothing():
    with pytest.raises(ValueError):
        summarize([])


def test_readme_section_is_replaced_not_appended(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:latency -->\nold\n<!-- /bench:latency -->\nend\n")
    update_readme(readme, "latency", "new table\n")
    update_readme(readme, "latency", "newer table\n")
    assert readme.read_text() == "intro\n<!-- bench:latency -->\nnewer table\n<!-- /bench:latency -->\nend\n"


def test_latency_markdown_from_a_synthetic_report(tmp_path):
    from emnist_edge.benchmarks.latency import markdown

    model = tmp_path / "m.int8.tflite"
    model.write_bytes(b"x" * 2048)
    row = {"arch": "m", "format": "int8", "path_kind": "tflite", "runtime": "ai-edge-litert", "threads": 1,
           "model": str(model), **summarize([0.00002] * 10), "speedup_vs_keras_predict": 3200.0,
           "speedup_vs_keras_call": 325.0, "fraction_of_peak": 0.31}
    report = {"machine": {"processor": "x", "cpus": 2, "python": "3.11"}, "peak_gflops": {"1": 50.0},
              "settings": {"batches": [1]}, "results": [row], "cold_start": {"edge": {"median_s": 0.3,
                                                                                      "peak_rss_mib": 60}}}
    md = markdown(report, {"models": {"m": [{"format": "int8", "top1": 0.9}]}})
    assert "| m | int8 | ai-edge-litert | 1 | 2 | 90.00% | 0.0200 |" in md
    assert "| 3,200 | 325.0 | 31.0 |" in md
    json.dumps(report)
