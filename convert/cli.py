"""emnist-convert MODEL.keras: write MODEL.<mode>.tflite files with embedded metadata, each verified against Keras."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..edge.runtime import EdgeError
from ..training.data import DataError
from .convert import DEFAULT_CALIBRATION, DEFAULT_MODES, MODES, ConvertError, convert_file


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="emnist-convert", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="a .keras file with its .card.json beside it (written by emnist-train)")
    p.add_argument("--mode", action="append", choices=MODES,
                   help=f"repeat for several (default: {' and '.join(DEFAULT_MODES)})")
    p.add_argument("--out", help="output folder (default: the model's folder)")
    g = p.add_argument_group("calibration and verification")
    g.add_argument("--data", help="EMNIST gzip.zip or folder (default: $EMNIST_DATA, emnist cache)")
    g.add_argument("--calibration", type=int, default=DEFAULT_CALIBRATION,
                   help="int8 calibration images (class-balanced, from the training side)")
    g.add_argument("--verify-n", type=int, default=5000, help="validation images used to verify each file")
    g.add_argument("--min-agreement", type=float, default=0.99,
                   help="fail when top-1 agreement with Keras falls below this")
    g.add_argument("--no-verify", action="store_true", help="skip verification (float modes then need no data)")
    g.add_argument("--runtime", choices=("ai-edge-litert", "tflite-runtime"), help="interpreter used to verify")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    args = p.parse_args(argv)
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    try:
        if args.calibration < 1:
            raise ConvertError("--calibration must be at least 1")
        model = Path(args.model)
        results = convert_file(model, Path(args.out) if args.out else model.parent, tuple(args.mode or DEFAULT_MODES),
                               data=args.data, calibration=args.calibration, verify_n=args.verify_n,
                               min_agreement=args.min_agreement, do_verify=not args.no_verify,
                               runtime=args.runtime, progress=log)
    except (ConvertError, DataError, EdgeError) as e:
        print(f"emnist-convert: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(f"wrote {r['path']}  {r['size_bytes']:,} bytes  sha256 {r['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
