"""Lint a data set: counts, per-class boxes, empty images, every fix applied, box sizes; JSON + PNG.

Usage:
    python tools/lint_data.py --config configs/bccd_r18_fpn.yaml [--split train|val|both]
                              [--json FILE] [--png FILE] [--no-decode] [key=value ...]

The key=value overrides are config overrides (e.g. data.train.roots=[/data/VOC2007]).
skip_bad_images and ignore_unknown_classes are forced on so that every problem is reported.
"""

from __future__ import annotations

import argparse
import os
import sys

from detkit.atomic_io import write_json_atomic
from detkit.config import load_config
from detkit.data.lint import format_lint, lint_config, plot_lint, public_result
from detkit.errors import DetkitError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--split", choices=("train", "val", "both"), default="both")
    parser.add_argument("--json", help="write the full report as JSON to this file")
    parser.add_argument("--png", help="plot file (default: the --json path with .png, else lint_data.png)")
    parser.add_argument("--no-decode", action="store_true", help="do not decode every image")
    parser.add_argument("overrides", nargs="*", help="config overrides, dotted.key=value")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        splits = ("train", "val") if args.split == "both" else (args.split,)
        result = lint_config(cfg, splits, decode=not args.no_decode)
    except DetkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_lint(result))
    if args.json:
        write_json_atomic(public_result(result), args.json)
        print(f"wrote {args.json}")
    png = args.png or (os.path.splitext(args.json)[0] + ".png" if args.json else "lint_data.png")
    plot_lint(result, png)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
