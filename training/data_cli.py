"""emnist-data: what EMNIST data is here, is it NIST-exact, the pool protocol's split, and a sample grid PNG."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .data import SPLITS, DataError, find_source, load_split
from .files import replacing
from .pool import build_pool


def cmd_list(args) -> int:
    from .data import inventory

    source = find_source(args.data)
    rows = inventory(source)
    if args.json:
        print(json.dumps({"source": str(source.path), "files": rows}))
        return 0
    print(f"EMNIST source: {source.path}")
    print(f"{'split':9} {'subset':6} {'images':10} {'labels':10} {'count':>8}  mapping")
    for r in rows:
        count = r.get("labels_count")
        print(f"{r['split']:9} {r['subset']:6} {r['images']:10} {r['labels']:10} {count if count is not None else '-':>8}  {r['mapping']}")
    bad = [r for r in rows if "MISMATCH" in (r["images"], r["labels"]) or "corrupt" in (r["images"], r["labels"])]
    if bad:
        print("emnist-data: error: files that do not match NIST's sha256: "
              + ", ".join(f"{r['split']}/{r['subset']}" for r in bad), file=sys.stderr)
        return 3
    return 0


def cmd_pool(args) -> int:
    source = find_source(args.data)
    pool = build_pool(source, seed=args.seed, use_cache=not args.no_cache,
                      progress=lambda m: print(m, file=sys.stderr))
    s = pool.summary()
    if args.json:
        print(json.dumps(s))
    else:
        print(f"pool protocol (seed {args.seed}): {s['images']:,} images in {s['classes']} classes "
              f"({s['duplicates_dropped']:,} duplicates dropped, {s['conflicting_labels_dropped']} with conflicting labels)")
        print(f"train {s['train']:,}  validation {s['val']:,}  test {s['test']:,} ({s['test_per_class']} per class)")
        print(f"overlap by image bytes: {s['overlap']}")
        print(f"split hash: {s['split_hash']}")
    return 0 if not any(s["overlap"].values()) else 4


def cmd_grid(args) -> int:
    from PIL import Image, ImageDraw

    source = find_source(args.data)
    if args.split == "pool":
        pool = build_pool(source, seed=args.seed, progress=lambda m: print(m, file=sys.stderr))
        images, labels = pool.subset(args.subset if args.subset != "train" else "train")
        chars = pool.chars
    else:
        s = load_split(source, args.split, args.subset)
        images, labels, chars = s.images, s.labels, s.chars
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(labels), size=min(args.n, len(labels)), replace=False)
    cols = 12
    rows = (len(pick) + cols - 1) // cols
    cell, scale = 40, 1
    grid = Image.new("L", (cols * cell, rows * cell), 40)
    draw = ImageDraw.Draw(grid)
    for k, i in enumerate(pick):
        x, y = (k % cols) * cell, (k // cols) * cell
        grid.paste(Image.fromarray(images[i]), (x + 6, y))
        draw.text((x + 16, y + 28), chars[labels[i]], fill=255)
    grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST) if scale else grid
    with replacing(os.path.abspath(args.out)) as tmp:
        grid.save(tmp, format="PNG")
    print(f"wrote {args.out}: {len(pick)} {args.split}/{args.subset} samples, upright, label under each")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="emnist-data", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", help="NIST gzip.zip or folder of its .gz files (default: $EMNIST_DATA, emnist cache)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="splits found, counts, NIST sha256 status")
    sp = sub.add_parser("pool", help="build (or load) the 47-class pool protocol and print its split")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--no-cache", action="store_true", help="rebuild instead of reading the user cache")
    sg = sub.add_parser("grid", help="PNG grid of samples with their characters")
    sg.add_argument("--split", default="pool", choices=("pool",) + SPLITS)
    sg.add_argument("--subset", default="test", choices=("train", "val", "test"))
    sg.add_argument("--n", type=int, default=96)
    sg.add_argument("--seed", type=int, default=0)
    sg.add_argument("--out", default="emnist-grid.png")
    args = p.parse_args(argv)
    try:
        return {"list": cmd_list, "pool": cmd_pool, "grid": cmd_grid}[args.cmd](args)
    except DataError as e:
        print(f"emnist-data: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"emnist-data: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
