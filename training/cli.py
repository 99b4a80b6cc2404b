"""emnist-train: train an architecture on a split or the pool protocol; writes .keras, history, curves, model card."""
from __future__ import annotations

import argparse
import json
import sys

from .data import SPLITS, DataError
from .train import TrainConfig, train

ARCH_NAMES = ("seed", "edge_vgg", "tiny")  # models.ARCHITECTURES, listed here so --help needs no TensorFlow


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="emnist-train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", help="NIST gzip.zip or folder of its .gz files (default: $EMNIST_DATA, emnist cache)")
    g.add_argument("--protocol", default=d.protocol, help=f"pool or an official split: {', '.join(SPLITS)}")
    g.add_argument("--limit", type=int, default=0, help="train on the first N training images only (smoke runs)")
    g.add_argument("--test-per-class", type=int, default=d.test_per_class, help="pool protocol test images per class")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--arch", default=d.arch, help=f"architecture: {', '.join(ARCH_NAMES)}")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="per replica")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (cosine decay)")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--patience", type=int, default=d.patience, help="early stop after N epochs without val gain")
    g.add_argument("--no-class-weights", action="store_true", help="train on the unbalanced pool as it is")
    g.add_argument("--no-augment", action="store_true")
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("run")
    g.add_argument("--out", default=None, help="output folder (default: runs/ARCH)")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    g.add_argument("--init", help="start from this .keras model's weights (fine-tuning; same architecture)")
    g.add_argument("--strategy", default=d.strategy, choices=("default", "mirrored", "multiworker"),
                   help="tf.distribute: mirrored = all local GPUs; multiworker = machines listed in TF_CONFIG")
    g.add_argument("--cpu-replicas", type=int, default=0, help="split the CPU into N logical devices (testing)")
    g.add_argument("--json", action="store_true", help="print the model card as JSON at the end")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.protocol != "pool" and args.protocol not in SPLITS:
            raise DataError(f"unknown split {args.protocol!r}; choose pool or one of {', '.join(SPLITS)}")
        if args.arch not in ARCH_NAMES:
            raise DataError(f"unknown architecture {args.arch!r}; choose from {', '.join(ARCH_NAMES)}")
        cfg = TrainConfig(
            data=args.data, protocol=args.protocol, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, out=args.out or f"runs/{args.arch}", class_weights=not args.no_class_weights,
            augment=not args.no_augment, label_smoothing=args.label_smoothing, patience=args.patience,
            strategy=args.strategy, cpu_replicas=args.cpu_replicas, limit=args.limit, resume=args.resume,
            test_per_class=args.test_per_class, init=args.init,
        )
        log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
        card = train(cfg, progress=log)
    except DataError as e:
        print(f"emnist-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emnist-train: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(card))
    else:
        print(f"wrote {cfg.out}/{cfg.arch}.keras: test accuracy {card['test_accuracy']:.4f} ({card['test_set']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
