"""What each preprocessing step does: accuracy on real handwriting (a labelled manifest) and on EMNIST test
characters rendered the way users' images look, with each optional step switched off in turn; and the time one
real-sized photo takes."""
from __future__ import annotations

import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..edge import preprocess as pp
from ..edge.cli import fold_label
from .stats import summarize

VARIANTS = {
    "all steps": pp.Steps(),
    "no EXIF": pp.Steps(exif=False),
    "no auto polarity": pp.Steps(auto_polarity=False),
    "no lighting flattening": pp.Steps(flatten_lighting=False),
    "no speck removal": pp.Steps(drop_specks=False),
    "no stroke normalising": pp.Steps(normalise_stroke=False),
    "notebook recipe (resize whole image, invert)": pp.Steps(emnist_fit=False),
}


def render_user_style(glyph: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """An upright EMNIST glyph -> a photo-like image: larger, off-centre, dark ink on uneven paper,
    thin or thick pen, light noise; sometimes light ink on dark (a canvas)."""
    scale = int(rng.integers(5, 14))
    big = Image.fromarray(glyph).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    stroke = rng.choice(["thin", "normal", "thick"])
    k = max(3, (scale // 2) | 1)
    if stroke == "thin":
        big = big.filter(ImageFilter.MinFilter(k))
    elif stroke == "thick":
        big = big.filter(ImageFilter.MaxFilter(k))
    ink = np.asarray(big, np.float32) / 255
    h, w = int(28 * scale * rng.uniform(1.3, 2.5)), int(28 * scale * rng.uniform(1.3, 2.5))
    canvas = np.zeros((h, w), np.float32)
    y0, x0 = int(rng.integers(0, h - ink.shape[0] + 1)), int(rng.integers(0, w - ink.shape[1] + 1))
    canvas[y0:y0 + ink.shape[0], x0:x0 + ink.shape[1]] = ink
    if rng.random() < 0.2:  # white on black canvas
        img = 255 * canvas
    else:
        light = np.linspace(rng.uniform(0.6, 1.0), 1.0, w)[None, :] * np.linspace(rng.uniform(0.8, 1.0), 1.0, h)[:, None]
        paper = 240 * light
        img = paper * (1 - canvas) + 25 * canvas
    img = img + rng.normal(0, 4, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)), str(stroke)


def rendered_set(data: str | None, per_class: int, seed: int = 0):
    from ..training.data import find_source
    from ..training.pool import build_pool

    pool = build_pool(find_source(data, download=False), progress=lambda m: None)
    x, y = pool.subset("test")
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(len(pool.chars))])
    images = [render_user_style(x[i], rng)[0] for i in pick]
    return images, [pool.chars[y[i]] for i in pick]


def manifest_set(manifest: Path):
    rows = list(csv.DictReader(manifest.open(newline="")))
    return [Image.open(manifest.parent / r["path"]) for r in rows], [r["label"] for r in rows]


def accuracy(model, images, labels, steps: pp.Steps) -> float:
    batch, truth, failures = [], [], 0
    for img, lab in zip(images, labels):
        try:
            batch.append(pp.prepare(img.copy(), steps).pixels)
            truth.append(fold_label(lab, model.chars))
        except pp.EdgeError:
            failures += 1
    if not batch:
        return 0.0
    pred = model.predict_proba(np.stack(batch)).argmax(1)
    return sum(model.chars[p] == t for p, t in zip(pred, truth)) / (len(batch) + failures)


def photo_timing(runs: int = 20) -> dict:
    """prepare() on a 12 MP phone-photo-sized image (4032x3024) and on a 400x400 canvas."""
    rng = np.random.default_rng(0)
    out = {}
    for name, size in (("12 MP photo 4032x3024", (3024, 4032)), ("canvas 400x400", (400, 400))):
        h, w = size
        img = np.full(size, 230, np.float32) * np.linspace(0.7, 1.0, w)[None, :]
        yy, xx = np.mgrid[0:h, 0:w]
        ring = np.abs(np.hypot(yy - h / 2, xx - w / 2) - min(h, w) / 5) < min(h, w) / 60
        img[ring] = 30
        im = Image.fromarray((img + rng.normal(0, 3, size)).clip(0, 255).astype(np.uint8))
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            pp.prepare(im)
            times.append(time.perf_counter() - t0)
        out[name] = summarize(times)
    return out


def run(model, manifest: Path | None, data: str | None, per_class: int, progress=print) -> dict:
    sets = {}
    if manifest is not None:
        sets[f"real handwriting ({manifest.parent.name}, {sum(1 for _ in manifest.open()) - 1} images)"] = \
            manifest_set(manifest)
    if per_class:
        progress("rendering EMNIST test characters as user-style images")
        images, labels = rendered_set(data, per_class)
        sets[f"EMNIST pool test rendered user-style ({len(images)} images)"] = (images, labels)
    table = {}
    for variant, steps in VARIANTS.items():
        progress(variant)
        table[variant] = {name: accuracy(model, imgs, labs, replace(steps)) for name, (imgs, labs) in sets.items()}
    return {"model": str(model.path), "runtime": model.runtime, "accuracy": table, "timing": photo_timing()}


def markdown(report: dict) -> str:
    names = list(next(iter(report["accuracy"].values())).keys())
    lines = [f"Model: {Path(report['model']).name} ({report['runtime']}). Top-1 accuracy with each optional step "
             "switched off in turn:", "", "| preprocessing | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for variant, accs in report["accuracy"].items():
        lines.append(f"| {variant} | " + " | ".join(f"{100 * accs[n]:.1f}%" for n in names) + " |")
    lines += ["", "| image | prepare() p50 ms | p90 ms |", "|---|---:|---:|"]
    for name, t in report["timing"].items():
        lines.append(f"| {name} | {t['p50_ms']:.1f} | {t['p90_ms']:.1f} |")
    return "\n".join(lines) + "\n"
