"""Compare the anchor sizing modes (manual, kmeans, learned) on a config's training split.

    detkit anchors --config CFG [--json FILE] [--output-dir DIR] [key=value ...]

Prints the metric table of docs/anchors.md (centred mBIoU; grid-aware mean best IoU, recall at 0.5 and
0.7, share of boxes below 0.3, anchors at IoU >= 0.7 per box; overall and by COCO size bucket) and
each mode's shapes per level. Writes DIR/anchors.json and DIR/anchors.png (default DIR:
<output.dir>/anchors); --json FILE writes the same {"manual", "kmeans", "learned"} dict to FILE.
key=value overrides change the config, e.g. data.min_size=[480] data.max_size=640.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from detkit.cli.command import report_error, run_standalone
from detkit.errors import DetkitError

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``detkit anchors`` (those of tools/anchors.py)."""
    parser.add_argument("--config", help="YAML config (default: the built-in defaults, synthetic data)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--output-dir", help="where anchors.json and anchors.png go (default <output.dir>/anchors)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")


def run(args: argparse.Namespace) -> int:
    """Report the anchor modes as ``args`` say; 0 when done, 1 on a user error."""
    from detkit.anchors.report import anchor_report
    from detkit.config import load_config

    try:
        cfg = load_config(args.config, args.overrides)
        output_dir = args.output_dir or os.path.join(cfg.output.dir, "anchors")
        anchor_report(cfg, output_dir=output_dir, json_path=args.json)
    except DetkitError as exc:
        return report_error(exc, 1)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detkit anchors`` as a program of its own (tools/anchors.py)."""
    return run_standalone(__doc__, add_arguments, run, argv)
