"""Quantization accuracy report: Keras against its float32 / float16 / dynamic / int8 .tflite files, same test set.

TFLite predictions are computed before TensorFlow is imported (tflite-runtime cannot create an interpreter once it
is), so the report also runs on a Pi with the edge runtime only: Keras columns then read "not available".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..edge.runtime import EdgeModel
from ..training.data import find_source, load_split

MODES = ("float32", "float16", "dynamic", "int8")


def test_set(data: str | None, split: str, progress=print):
    source = find_source(data, download=False)
    if split == "pool":
        from ..training.pool import build_pool

        pool = build_pool(source, progress=progress)
        x, y = pool.subset("test")
        return x, y, pool.chars, f"pool protocol test set ({len(y):,} images, split {pool.split_hash[:12]})"
    s = load_split(source, split, "test")
    return s.images, s.labels, s.chars, f"{split} test ({len(s.labels):,} images)"


def keras_probs(path: Path, images: np.ndarray) -> np.ndarray | None:
    try:
        import keras

        from ..training import models  # noqa: F401  (custom loss registration)
    except ImportError:
        return None
    m = keras.models.load_model(path, compile=False)
    return m.predict(images[..., None].astype(np.float32), batch_size=1024, verbose=0)


def per_class(pred: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    return np.array([np.mean(pred[y == c] == c) if np.any(y == c) else np.nan for c in range(n)])


def confusion(pred: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def evaluate_arch(models_dir: Path, arch: str, x, y, chars, runtime=None, progress=print) -> dict:
    n = len(chars)
    probs = {}
    for mode in MODES:
        path = models_dir / f"{arch}.{mode}.tflite"
        if path.is_file():
            progress(f"{arch} {mode}")
            em = EdgeModel(path, runtime=runtime)
            if em.chars != list(chars):
                raise ValueError(f"{path.name}: classes differ from the test set's")
            probs[mode] = (em.predict_proba(x), path, f"{em.runtime} {em.runtime_version}")
    keras_path = models_dir / f"{arch}.keras"
    kp = keras_probs(keras_path, x) if keras_path.is_file() else None
    ref_pred = kp.argmax(1) if kp is not None else None
    ref_cm = confusion(ref_pred, y, n) if kp is not None else None
    ref_pc = per_class(ref_pred, y, n) if kp is not None else None
    rows = []
    entries = ([("keras", kp, keras_path, "tensorflow")] if kp is not None else []) + \
              [(mode, p, path, rt) for mode, (p, path, rt) in probs.items()]
    for fmt, p, path, rt in entries:
        pred = p.argmax(1)
        top5 = np.argsort(-p, 1)[:, :5]
        pc = per_class(pred, y, n)
        row = {"format": fmt, "file": path.name, "size_bytes": path.stat().st_size, "runtime": rt,
               "top1": float(np.mean(pred == y)), "top5": float(np.mean((top5 == y[:, None]).any(1))),
               "per_class": {chars[c]: float(pc[c]) for c in range(n)}}
        if kp is not None and fmt != "keras":
            row["agreement"] = float(np.mean(pred == ref_pred))
            top2 = np.sort(p, 1)[:, -2:]
            disagree = pred != ref_pred
            # quantized softmax outputs can tie exactly; argmax then takes the first class, not Keras' choice
            row["disagreements_with_tied_top2"] = float(np.mean(top2[disagree, 0] == top2[disagree, 1])) \
                if disagree.any() else 0.0
            row["delta_top1_pp"] = 100 * (row["top1"] - float(np.mean(ref_pred == y)))
            delta = pc - ref_pc
            row["per_class_delta_pp"] = {chars[c]: float(100 * delta[c]) for c in range(n)}
            diff = confusion(pred, y, n) - ref_cm
            np.fill_diagonal(diff, 0)
            order = np.argsort(-np.abs(diff), axis=None)[:10]
            row["confusions_changed"] = [
                {"true": chars[i], "predicted": chars[j], "change": int(diff[i, j])}
                for i, j in zip(*np.unravel_index(order, diff.shape)) if diff[i, j] != 0]
        rows.append(row)
    card_path = models_dir / f"{arch}.card.json"
    if card_path.is_file():  # the card's figure next to the re-measured one: they must agree
        card = json.loads(card_path.read_text())
        for row in rows:
            if row["format"] == "keras":
                row["card_test_accuracy"] = card.get("test_accuracy")
                row["params"], row["macs_per_image"] = card.get("params"), card.get("macs_per_image")
    return {"rows": rows, "confusion_int8": confusion(probs["int8"][0].argmax(1), y, n).tolist()
            if "int8" in probs else None, "keras_available": kp is not None}


def run(models_dir: Path, archs: list[str], data: str | None, split: str, runtime=None, progress=print) -> dict:
    x, y, chars, description = test_set(data, split, progress)
    out = {"test_set": description, "classes": "".join(chars), "models": {}, "extra": {}}
    for arch in archs:
        res = evaluate_arch(models_dir, arch, x, y, chars, runtime, progress)
        out["models"][arch] = res["rows"]
        out["extra"][arch] = {"confusion_int8": res["confusion_int8"], "keras_available": res["keras_available"]}
    return out


def markdown(report: dict) -> str:
    lines = [f"Test set: {report['test_set']}.", ""]
    for arch, rows in report["models"].items():
        lines += [f"### {arch}", "",
                  "| format | file | size KiB | top-1 | top-5 | vs Keras (pp) | agreement with Keras | largest per-class drop |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            worst = min(r.get("per_class_delta_pp", {}).items(), key=lambda kv: kv[1], default=None)
            na = "not available" if r["format"] != "keras" else "-"
            lines.append(
                f"| {r['format']} | {r['file']} | {r['size_bytes'] / 1024:,.1f} | {100 * r['top1']:.2f}% | "
                f"{100 * r['top5']:.2f}% | {('%+.2f' % r['delta_top1_pp']) if 'delta_top1_pp' in r else na} | "
                f"{('%.2f%%' % (100 * r['agreement'])) if 'agreement' in r else na} | "
                f"{('%s %+.2f pp' % worst) if worst else na} |")
        keras_row = next((r for r in rows if r["format"] == "keras"), None)
        if keras_row and keras_row.get("card_test_accuracy") is not None:
            lines += ["", f"Keras re-measured here: {100 * keras_row['top1']:.2f}%; its model card says "
                      f"{100 * keras_row['card_test_accuracy']:.2f}% ({keras_row['params']:,} parameters, "
                      f"{keras_row['macs_per_image'] / 1e6:.2f} MMACs per image)."]
        int8 = next((r for r in rows if r["format"] == "int8"), None)
        if int8 and "disagreements_with_tied_top2" in int8:
            lines += ["", f"int8 disagreements with Keras where the int8 top two outputs are exactly tied: "
                      f"{100 * int8['disagreements_with_tied_top2']:.0f}%."]
        if int8 and int8.get("confusions_changed"):
            lines += ["", "Confusions that int8 changed most (true -> predicted: change in count vs Keras): "
                      + ", ".join(f"{c['true']}->{c['predicted']} {c['change']:+d}" for c in int8["confusions_changed"])]
        lines.append("")
    return "\n".join(lines)


def plots(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chars = list(report["classes"])
    written = []
    for arch, rows in report["models"].items():
        cm = report["extra"][arch]["confusion_int8"]
        if cm is not None:
            cm = np.array(cm, np.float64)
            cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            fig, ax = plt.subplots(figsize=(9, 8))
            im = ax.imshow(np.sqrt(cm), cmap="viridis")
            ax.set_xticks(range(len(chars)), chars, fontsize=6)
            ax.set_yticks(range(len(chars)), chars, fontsize=6)
            ax.set(xlabel="predicted", ylabel="true", title=f"{arch} int8: confusion (row-normalised, sqrt scale)")
            fig.colorbar(im, ax=ax, shrink=0.8)
            fig.tight_layout()
            p = out_dir / f"accuracy-{arch}-int8-confusion.png"
            fig.savefig(p, dpi=90)
            plt.close(fig)
            written.append(p)
        quant = [r for r in rows if "per_class_delta_pp" in r]
        if quant:
            fig, ax = plt.subplots(figsize=(12, 3.5))
            w = 0.8 / len(quant)
            for k, r in enumerate(quant):
                ax.bar(np.arange(len(chars)) + k * w, [r["per_class_delta_pp"][c] for c in chars], w, label=r["format"])
            ax.axhline(0, color="k", lw=0.5)
            ax.set_xticks(np.arange(len(chars)) + 0.4, chars, fontsize=7)
            ax.set(ylabel="per-class accuracy change vs Keras (pp)", title=f"{arch}: per-class change after conversion")
            ax.legend(fontsize=7)
            fig.tight_layout()
            p = out_dir / f"accuracy-{arch}-per-class-delta.png"
            fig.savefig(p, dpi=90)
            plt.close(fig)
            written.append(p)
    return written


def dump(report: dict) -> str:
    return json.dumps(report, indent=1)
