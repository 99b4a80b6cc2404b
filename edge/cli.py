"""emnist-edge: recognise handwritten characters with a .tflite model and the TFLite runtime only.

Exit codes: 0 all done; 2 usage or runtime missing; 3 model missing, corrupt or without metadata;
4 an image could not be read (others in the same run are still processed); 5 no character found in an image.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from .runtime import RUNTIMES, EdgeError, EdgeModel

DEFAULT_MODEL = "edge_vgg.int8.tflite"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


def default_model_path() -> Path:
    return Path(str(resources.files("emnist_edge.models") / DEFAULT_MODEL))


def load_model(args) -> EdgeModel:
    return EdgeModel(args.model or default_model_path(), runtime=args.runtime, threads=args.threads)


def top_k(model: EdgeModel, probs: np.ndarray, k: int) -> list[dict]:
    order = np.argsort(-probs)[:k]
    return [{"label": model.chars[i], "p": round(float(probs[i]), 5)} for i in order]


def expand_inputs(items: list[str]) -> list[str]:
    out = []
    for item in items:
        p = Path(item)
        if item != "-" and p.is_dir():
            out.extend(str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(item)
    return out


def cmd_predict(args) -> int:
    from .preprocess import prepare

    model = load_model(args)
    paths = expand_inputs(args.images)
    if not paths:
        raise EdgeError("no images given (files, a folder, or - for standard input)")
    code = 0
    glyphs, ok_paths = [], []
    for path in paths:
        try:
            src = sys.stdin.buffer.read() if path == "-" else path
            glyphs.append(prepare(src))
            ok_paths.append(path)
        except EdgeError as e:
            code = code or e.exit_code
            msg = str(e) if str(e).startswith(path) else f"{path}: {e}"
            print(f"emnist-edge: {msg}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": path, "error": str(e), "exit_code": e.exit_code}))
    if glyphs:
        probs = model.predict_proba(np.stack([g.pixels for g in glyphs]))
        for path, g, p in zip(ok_paths, glyphs, probs):
            tk = top_k(model, p, args.top_k)
            if args.json:
                print(json.dumps({"path": path, "label": tk[0]["label"], "confidence": tk[0]["p"], "top_k": tk,
                                  "box": list(g.box)}))
            else:
                alts = "  ".join(f"{t['label']} {t['p']:.2f}" for t in tk[1:])
                print(f"{path}: {tk[0]['label']}  ({tk[0]['p']:.2f})   next: {alts}")
    return code


def cmd_read(args) -> int:
    from .preprocess import segment_line

    model = load_model(args)
    glyphs = segment_line(args.image, space_factor=args.space)
    chars = [g for g in glyphs if g is not None]
    probs = model.predict_proba(np.stack([g.pixels for g in chars]))
    text, detail, k = [], [], 0
    for g in glyphs:
        if g is None:
            text.append(" ")
            continue
        tk = top_k(model, probs[k], args.top_k)
        k += 1
        text.append(tk[0]["label"])
        detail.append({"label": tk[0]["label"], "confidence": tk[0]["p"], "box": list(g.box), "top_k": tk})
    line = "".join(text)
    if args.json:
        print(json.dumps({"path": args.image, "text": line, "characters": detail}))
    else:
        print(line)
    return 0


def fold_label(label: str, chars: list[str]) -> str | None:
    """A written character -> the model's class (c counts as C for the 47 merged classes)."""
    if label in chars:
        return label
    for alt in (label.upper(), label.lower()):
        if alt in chars:
            return alt
    return None


def cmd_eval(args) -> int:
    from .preprocess import prepare

    model = load_model(args)
    failed = 0
    if args.manifest:
        manifest = Path(args.manifest)
        try:
            rows = list(csv.DictReader(manifest.open(newline="")))
        except OSError as e:
            raise EdgeError(f"cannot read manifest {manifest}: {e.strerror}") from None
        if not rows or "path" not in rows[0] or "label" not in rows[0]:
            raise EdgeError(f"{manifest}: needs a header with path,label columns")
        images, truth = [], []
        for r in rows:
            want = fold_label(r["label"], model.chars)
            if want is None:
                raise EdgeError(f"{manifest}: label {r['label']!r} is not one of the model's classes")
            try:
                images.append(prepare(str(manifest.parent / r["path"])).pixels)
                truth.append(want)
            except EdgeError as e:
                failed += 1
                print(f"emnist-edge: {r['path']}: {e}", file=sys.stderr)
        if not images:
            raise EdgeError("no image in the manifest could be read")
        images = np.stack(images)
        source = str(manifest)
    else:
        from ..training.data import DataError, find_source, load_split  # numpy-only reader, imported lazily

        try:
            source_obj = find_source(args.data, download=False)
            if args.split == "pool":
                from ..training.pool import build_pool

                pool = build_pool(source_obj, progress=lambda m: print(m, file=sys.stderr))
                images, labels = pool.subset("test")
                names = pool.chars
            else:
                s = load_split(source_obj, args.split, "test")
                images, labels, names = s.images, s.labels, s.chars
        except DataError as e:
            raise EdgeError(str(e)) from None
        if args.limit:
            pick = np.sort(np.random.default_rng(0).permutation(len(labels))[: args.limit])
            images, labels = images[pick], labels[pick]
        truth = [fold_label(names[i], model.chars) for i in labels]
        source = f"{source_obj.path} ({args.split} test)"
    probs = model.predict_proba(images)
    pred = [model.chars[i] for i in probs.argmax(1)]
    report = accuracy_report(truth, pred, probs, model)
    report.update({"source": source, "model": str(model.path), "runtime": model.runtime, "unreadable": failed})
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['correct']}/{report['n']} correct: top-1 {report['top1']:.2%}  top-5 {report['top5']:.2%}  "
              f"({source}, {model.path.name}, {model.runtime})")
        worst = sorted(report["per_class"].items(), key=lambda kv: kv[1]["accuracy"])[:8]
        print("weakest classes: " + ", ".join(f"{c} {v['accuracy']:.0%} (n={v['n']})" for c, v in worst))
        print("most confused (true->predicted): "
              + ", ".join(f"{a}->{b} x{n}" for a, b, n in report["confused"][:10]))
    return 4 if failed else 0


def accuracy_report(truth: list, pred: list, probs: np.ndarray, model: EdgeModel) -> dict:
    truth_idx = np.array([model.chars.index(t) for t in truth])
    top5 = np.argsort(-probs, 1)[:, :5]
    per_class, pairs = {}, {}
    for t, p in zip(truth, pred):
        d = per_class.setdefault(t, {"n": 0, "correct": 0})
        d["n"] += 1
        d["correct"] += t == p
        if t != p:
            pairs[(t, p)] = pairs.get((t, p), 0) + 1
    for d in per_class.values():
        d["accuracy"] = d["correct"] / d["n"]
    correct = sum(d["correct"] for d in per_class.values())
    return {"n": len(truth), "correct": correct, "top1": correct / len(truth),
            "top5": float(np.mean([t in row for t, row in zip(truth_idx, top5)])),
            "per_class": dict(sorted(per_class.items())),
            "confused": [[a, b, n] for (a, b), n in sorted(pairs.items(), key=lambda kv: -kv[1])]}


def cmd_info(args) -> int:
    if args.model_path:
        args.model = args.model_path
    info = load_model(args).info()
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:20} {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return 0


def cmd_draw(args) -> int:
    from .draw import run_pad

    return run_pad(load_model(args), save_dir=args.save_dir, top=args.top_k)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("model and runtime")
    g.add_argument("--model", help=f"a .tflite from emnist-convert (default: the shipped {DEFAULT_MODEL})")
    g.add_argument("--runtime", choices=RUNTIMES, help="force one (default: ai-edge-litert, then tflite-runtime)")
    g.add_argument("--threads", type=int, default=None, help="interpreter threads (default: the runtime's choice)")
    g.add_argument("--top-k", type=int, default=3, help="how many candidates to show (default: 3)")
    g.add_argument("--json", action="store_true", help="JSON output (predict: JSON Lines, one object per image)")

    p = argparse.ArgumentParser(prog="emnist-edge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    fmt = argparse.HelpFormatter  # defaults are spelled out in each help text
    sp = sub.add_parser("predict", parents=[common], formatter_class=fmt, help="one character per image")
    sp.add_argument("images", nargs="+", help="image files, folders of images, or - for standard input")
    sp.set_defaults(func=cmd_predict)
    sr = sub.add_parser("read", parents=[common], formatter_class=fmt, help="a handwritten word or line to text")
    sr.add_argument("image")
    sr.add_argument("--space", type=float, default=0.6, help="a gap wider than this x line height is a space (default: 0.6)")
    sr.set_defaults(func=cmd_read)
    se = sub.add_parser("eval", parents=[common], formatter_class=fmt,
                        help="accuracy on a labelled manifest (path,label) or on EMNIST")
    se.add_argument("--manifest", help="CSV with path,label columns (paths relative to the CSV)")
    se.add_argument("--data", help="EMNIST gzip.zip or folder (default: $EMNIST_DATA, emnist cache)")
    se.add_argument("--split", default="pool", help="pool (the 47-class pool test set, default) or an official split's test set")
    se.add_argument("--limit", type=int, default=0, help="evaluate a seeded random subset of N images (default: all)")
    se.set_defaults(func=cmd_eval)
    si = sub.add_parser("info", parents=[common], formatter_class=fmt, help="classes, input spec, quantization")
    si.add_argument("model_path", nargs="?", help="same as --model")
    si.set_defaults(func=cmd_info)
    sd = sub.add_parser("draw", parents=[common], formatter_class=fmt, help="drawing pad with live top-3 (Tk)")
    sd.add_argument("--save-dir", default=".", help="where Save writes drawings (default: current folder)")
    sd.set_defaults(func=cmd_draw)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeError as e:
        print(f"emnist-edge: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
