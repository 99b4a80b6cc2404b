"""Latency benchmark: Keras predict() and model(x) against each .tflite under each installed runtime.

Each runtime runs in its own process (tflite-runtime's Interpreter fails once TensorFlow is imported in the same
process, and separate processes keep caches and thread pools apart). Cold start and peak RSS of the edge CLI and
of a Keras script are measured per process with os.wait4.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .stats import ratio, summarize, time_calls

MODES = ("float32", "float16", "dynamic", "int8")


# --- workers: run inside their own process ----------------------------------------------------------------------

def _inputs(batch: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)


def worker(specs: list[dict], threads: int, min_runs: int, min_seconds: float) -> list[dict]:
    results = []
    keras_models = {}
    for spec in specs:
        batch = spec["batch"]
        x = _inputs(batch)
        runs = max(5, min_runs // (4 if batch > 1 else 1))
        if spec["path_kind"] in ("keras-predict", "keras-call"):
            import keras
            import tensorflow as tf

            from ..training import models  # noqa: F401  (custom loss registration)

            if not keras_models:  # thread pools are fixed at TensorFlow's first op: set them before it
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            m = keras_models.get(spec["model"])
            if m is None:
                m = keras_models[spec["model"]] = keras.models.load_model(spec["model"], compile=False)
            xf = tf.constant(x[..., None].astype(np.float32))
            if spec["path_kind"] == "keras-predict":
                fn = lambda: m.predict(xf, batch_size=batch, verbose=0)  # noqa: E731
            else:
                fn = lambda: m(xf, training=False).numpy()  # noqa: E731
            stats = summarize(time_calls(fn, warmup=3, min_runs=min(runs, 30), min_seconds=min_seconds), batch)
            version = f"tensorflow {tf.__version__}"
        else:
            from ..edge.runtime import EdgeError, EdgeModel

            try:
                em = EdgeModel(spec["model"], runtime=spec["runtime"], threads=threads)
            except EdgeError as e:  # e.g. tflite-runtime 2.14 lacks newer op versions: report it, go on
                results.append({**spec, "threads": threads, "error": str(e).split(": ", 1)[-1]})
                continue
            q = em.quantize_input(x)
            em.invoke(q)  # resize + first run outside the timing
            stats = summarize(time_calls(lambda: em.invoke(q), warmup=10, min_runs=runs, min_seconds=min_seconds), batch)
            version = f"{em.runtime} {em.runtime_version}"
        results.append({**spec, **stats, "threads": threads, "runtime_version": version})
    return results


def peak_gflops(threads: int, n: int = 1024, min_seconds: float = 1.0) -> float:
    """Float32 matrix-product throughput of this machine (numpy/BLAS), the compute limit efficiency is quoted
    against. Runs in a process whose BLAS is pinned to `threads`."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    t = np.median(time_calls(lambda: a @ b, warmup=2, min_runs=10, min_seconds=min_seconds))
    return 2 * n ** 3 / t / 1e9


# --- driver ----------------------------------------------------------------------------------------------------

def _run_worker(python: str, payload: dict, env_extra: dict | None = None) -> list[dict] | dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    r = subprocess.run([python, "-m", "emnist_edge.benchmarks.latency", json.dumps(payload)], capture_output=True,
                       text=True, env=env, timeout=1800)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _timed_process(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one process, start to exit."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, p.returncode


def cold_starts(edge_python: str, keras_model: Path | None, tflite_model: Path, image: Path, repeats: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cases = {
        "emnist-edge predict (one image)": [edge_python, "-m", "emnist_edge.edge.cli", "predict", "--model",
                                            str(tflite_model), str(image)],
        "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
    }
    if keras_model is not None:
        cases["Keras script (load .keras, predict one image)"] = [
            sys.executable, "-c",
            "import numpy as np, keras; from emnist_edge.training import models; "
            f"m = keras.models.load_model({str(keras_model)!r}, compile=False); "
            "print(m.predict(np.zeros((1, 28, 28, 1), np.float32), verbose=0).argmax())"]
    out = {}
    for name, cmd in cases.items():
        runs = [_timed_process(cmd, env) for _ in range(repeats)]
        if any(code != 0 for _, _, code in runs):
            out[name] = {"error": f"exit code {runs[0][2]}"}
            continue
        out[name] = {"median_s": float(np.median([w for w, _, _ in runs])), "peak_rss_mib": max(r for _, r, _ in runs),
                     "runs": repeats}
    return out


def machine() -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor(), "system": platform.system(),
            "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["blas_env"] = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(k)}
    return info


def run(models_dir: Path, archs: list[str], runtimes: dict[str, str], threads: list[int], batches: list[int],
        min_runs: int, min_seconds: float, keras: bool, cold_repeats: int, image: Path, progress=print) -> dict:
    """runtimes: runtime name -> python executable that has it (each runs in its own process)."""
    results = []
    for t in threads:
        progress(f"peak: float32 matrix product, {t} thread(s)")
    peaks = {t: _run_worker(sys.executable, {"peak": True, "threads": t},
                            {"OPENBLAS_NUM_THREADS": str(t), "OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t)})
             for t in threads}
    cards = {}
    for arch in archs:
        card_path = models_dir / f"{arch}.card.json"
        cards[arch] = json.loads(card_path.read_text()) if card_path.is_file() else {}
        for t in threads:
            specs = []
            if keras and (models_dir / f"{arch}.keras").is_file():
                for kind in ("keras-predict", "keras-call"):
                    for b in batches:
                        specs.append({"arch": arch, "path_kind": kind, "format": "keras", "model":
                                      str(models_dir / f"{arch}.keras"), "runtime": "tensorflow", "batch": b})
                progress(f"{arch}: Keras, {t} thread(s)")
                out = _run_worker(sys.executable, {"specs": specs, "threads": t, "min_runs": min_runs,
                                                   "min_seconds": min_seconds})
                results.extend(out if isinstance(out, list) else [{**s, **out, "threads": t} for s in specs])
            for runtime, python in runtimes.items():
                specs = [{"arch": arch, "path_kind": "tflite", "format": mode, "runtime": runtime, "batch": b,
                          "model": str(models_dir / f"{arch}.{mode}.tflite")}
                         for mode in MODES if (models_dir / f"{arch}.{mode}.tflite").is_file() for b in batches]
                if not specs:
                    continue
                progress(f"{arch}: {runtime}, {t} thread(s)")
                out = _run_worker(python, {"specs": specs, "threads": t, "min_runs": min_runs,
                                           "min_seconds": min_seconds})
                results.extend(out if isinstance(out, list) else [{**s, **out, "threads": t} for s in specs])
    # ratios to Keras, within this run, same arch / threads / batch
    for r in results:
        if "error" in r:
            continue
        for kind in ("keras-predict", "keras-call"):
            ref = next((k for k in results if k.get("path_kind") == kind and k["arch"] == r["arch"]
                        and k["threads"] == r["threads"] and k["batch"] == r["batch"] and "error" not in k), None)
            if ref is not None:
                r[f"speedup_vs_{kind.replace('-', '_')}"] = ratio(ref, r)
        macs = cards.get(r["arch"], {}).get("macs_per_image")
        peak = peaks.get(r["threads"])
        if macs and isinstance(peak, (int, float)):
            r["gflops"] = 2 * macs * r["images_per_s"] / 1e9
            r["fraction_of_peak"] = r["gflops"] / peak
    first_arch = archs[0]
    progress("cold starts")
    cold = cold_starts(
        next(iter(runtimes.values())) if runtimes else sys.executable,
        (models_dir / f"{first_arch}.keras") if keras and (models_dir / f"{first_arch}.keras").is_file() else None,
        models_dir / f"{first_arch}.int8.tflite", image, cold_repeats)
    return {"machine": machine(), "peak_gflops": peaks, "results": results, "cold_start": cold,
            "settings": {"threads": threads, "batches": batches, "min_runs": min_runs, "min_seconds": min_seconds},
            "cards": {a: {k: c.get(k) for k in ("params", "macs_per_image", "test_accuracy")} for a, c in cards.items()}}


def markdown(report: dict, accuracy: dict | None = None, threads: int | None = None) -> str:
    """Ultralytics-style table: format, size, accuracy, ms per image, images/s, ratios to Keras."""
    acc = {}
    for arch, rows in (accuracy or {}).get("models", {}).items():
        for row in rows:
            acc[(arch, row["format"])] = row.get("top1")
    lines = []
    m = report["machine"]
    lines.append(f"Machine: {m.get('cpu', m['processor'])}, {m['cpus']} CPUs, Python {m['python']}. "
                 f"Peak float32 matmul: " + ", ".join(f"{t} thread(s) {g:.1f} GFLOP/s" if isinstance(g, float) else
                                                      f"{t} thread(s) n/a" for t, g in report["peak_gflops"].items()))
    lines.append("")
    for b in report["settings"]["batches"]:
        lines.append(f"**Batch {b}** (median of timed runs; speed-ups measured in this run)")
        lines.append("")
        lines.append("| model | format | runtime | threads | size KiB | top-1 | ms/image (p50) | p90 ms/call | "
                     "p99 ms/call | images/s | x Keras predict() | x Keras model(x) | % of peak |")
        lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in report["results"]:
            if r["batch"] != b or (threads is not None and r["threads"] != threads):
                continue
            if "error" in r:
                lines.append(f"| {r['arch']} | {r['format']} | {r['runtime']} | {r['threads']} | | | error: {r['error']} "
                             "| | | | | | |")
                continue
            size = Path(r["model"]).stat().st_size / 1024 if Path(r["model"]).exists() else float("nan")
            fmt = r["format"] if r["path_kind"] == "tflite" else r["path_kind"].replace("keras-", "Keras ")
            a = acc.get((r["arch"], r["format"] if r["path_kind"] == "tflite" else "keras"))

            def num(key, fmt, scale=1.0):
                return format(r[key] * scale, fmt) if key in r else "n/a"

            lines.append(
                f"| {r['arch']} | {fmt} | {r['runtime']} | {r['threads']} | {size:,.0f} | "
                f"{'%.2f%%' % (100 * a) if a is not None else 'n/a'} | {r['ms_per_image']:.4f} | {r['p90_ms']:.3f} | "
                f"{r['p99_ms']:.3f} | {r['images_per_s']:,.0f} | {num('speedup_vs_keras_predict', ',.0f')} | "
                f"{num('speedup_vs_keras_call', ',.1f')} | {num('fraction_of_peak', '.1f', 100)} |")
        lines.append("")
    lines += targets(report)
    lines.append("**Cold start** (process start to printed answer; median; peak RSS of the process)")
    lines.append("")
    lines.append("| command | seconds | peak RSS MiB |")
    lines.append("|---|---:|---:|")
    for name, c in report["cold_start"].items():
        lines.append(f"| {name} | {c.get('median_s', float('nan')):.2f} | {c.get('peak_rss_mib', float('nan')):.0f} |")
    return "\n".join(lines) + "\n"


def targets(report: dict) -> list[str]:
    """The benchmark's targets, each as measured in this run: one thread, per model file and runtime."""
    ok = [r for r in report["results"] if "error" not in r and r["threads"] == 1 and r["path_kind"] == "tflite"]
    small, big = min(report["settings"]["batches"]), max(report["settings"]["batches"])
    lines = [f"**Targets, one thread** (single-image p50 against per-image time at batch {big}: at most 2x; "
             f"batch-{big} throughput as a share of the measured float32 matmul peak: at least 30%)", "",
             f"| model | format | runtime | batch-1 p50 / batch-{big} per image | % of peak at batch {big} |",
             "|---|---|---|---:|---:|"]
    for r in ok:
        if r["batch"] != big:
            continue
        one = next((k for k in ok if k["batch"] == small and k["model"] == r["model"] and k["runtime"] == r["runtime"]),
                   None)
        overhead = f"{one['p50_ms'] / r['ms_per_image']:.2f}x" if one else "n/a"
        peak = f"{100 * r['fraction_of_peak']:.1f}%" if "fraction_of_peak" in r else "n/a"
        lines.append(f"| {r['arch']} | {r['format']} | {r['runtime']} | {overhead} | {peak} |")
    cold = report["cold_start"]
    edge = next((v for k, v in cold.items() if k.startswith("emnist-edge")), {})
    tf = next((v for k, v in cold.items() if "import tensorflow" in k), {})
    if "median_s" in edge and "median_s" in tf:
        lines += ["", f"Cold start of `emnist-edge predict` is {edge['median_s'] / tf['median_s']:.3f} of "
                  f"`python -c 'import tensorflow'` (target: at most 0.1)."]
    return lines + [""]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "error" not in r and r["threads"] == 1]
    batches = report["settings"]["batches"]
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 5), squeeze=False)
    for ax, b in zip(axes[0], batches):
        sel = [r for r in rows if r["batch"] == b]
        labels = [f"{r['arch']} {r['format'] if r['path_kind'] == 'tflite' else r['path_kind']}\n{r['runtime']}"
                  for r in sel]
        ax.barh(range(len(sel)), [r["ms_per_image"] for r in sel], color="tab:blue")
        ax.set_yticks(range(len(sel)), labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("ms per image (p50, log scale)")
        ax.set_title(f"batch {b}, 1 thread")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":  # worker entry point: one JSON payload in argv, one JSON line out
    payload = json.loads(sys.argv[1])
    if payload.get("peak"):
        print(json.dumps(peak_gflops(payload["threads"])))
    else:
        print(json.dumps(worker(payload["specs"], payload["threads"], payload["min_runs"], payload["min_seconds"])))
