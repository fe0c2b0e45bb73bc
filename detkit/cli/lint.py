"""Lint a data set: counts, per-class boxes, empty images, every fix applied, box sizes; JSON + PNG.

Usage:
    detkit lint --config configs/bccd_r18_fpn.yaml [--split train|val|both]
                [--json FILE] [--png FILE] [--no-decode] [key=value ...]

The key=value overrides are config overrides (e.g. data.train.roots=[/data/VOC2007]).
skip_bad_images and ignore_unknown_classes are forced on so that every problem is reported.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from detkit.cli.command import report_error, run_standalone
from detkit.errors import DetkitError

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``detkit lint`` (those of tools/lint_data.py)."""
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--split", choices=("train", "val", "both"), default="both")
    parser.add_argument("--json", help="write the full report as JSON to this file")
    parser.add_argument("--png", help="plot file (default: the --json path with .png, else lint_data.png)")
    parser.add_argument("--no-decode", action="store_true", help="do not decode every image")
    parser.add_argument("overrides", nargs="*", help="config overrides, dotted.key=value")


def run(args: argparse.Namespace) -> int:
    """Lint as ``args`` say; 0 when the report is written, 2 on a user error."""
    from detkit.config import load_config
    from detkit.data.lint import lint_report

    splits = ("train", "val") if args.split == "both" else (args.split,)
    try:
        lint_report(load_config(args.config, args.overrides), splits, decode=not args.no_decode,
                    json_path=args.json, png_path=args.png)
    except DetkitError as exc:
        return report_error(exc, 2)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detkit lint`` as a program of its own (tools/lint_data.py)."""
    return run_standalone(__doc__, add_arguments, run, argv)
