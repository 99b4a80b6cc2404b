"""Timing statistics shared by the benchmarks (numpy only; tested on synthetic timings)."""
from __future__ import annotations

import time

import numpy as np


def summarize(seconds: list[float] | np.ndarray, batch: int = 1) -> dict:
    """Per-call percentiles in ms and throughput in images/s from per-call wall times."""
    t = np.asarray(seconds, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timings")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {
        "runs": int(t.size),
        "batch": batch,
        "p50_ms": p50 * 1e3,
        "p90_ms": p90 * 1e3,
        "p99_ms": p99 * 1e3,
        "mean_ms": float(t.mean() * 1e3),
        "ms_per_image": p50 * 1e3 / batch,
        "images_per_s": batch / p50,
    }


def ratio(slow: dict, fast: dict) -> float:
    """How many times faster `fast` is than `slow`, per image, from medians measured in the same run."""
    return slow["ms_per_image"] / fast["ms_per_image"]


def time_calls(fn, warmup: int = 10, min_runs: int = 50, min_seconds: float = 1.0, max_runs: int = 100_000,
               clock=time.perf_counter) -> list[float]:
    """Like TFLite's benchmark_model: warm up, then time single calls until both a minimum count and a minimum
    total time are reached."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    total = 0.0
    while (len(times) < min_runs or total < min_seconds) and len(times) < max_runs:
        t0 = clock()
        fn()
        dt = clock() - t0
        times.append(dt)
        total += dt
    return times
