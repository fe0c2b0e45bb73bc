"""Write the HTML report of a training run, or compare two runs.

    detkit report RUN_DIR [--output FILE] [--draw-threshold T] [--gallery-size N]
    detkit report RUN_A RUN_B [--output FILE] [--draw-threshold T] [--gallery-size N]

One run: RUN_DIR/report.html (training writes it at the end too, with output.report): the run summary,
config, data report, anchors, loss / lr / mAP curves, COCO table and per-class AP, PR curves, confusion
matrix, and an error-analysis gallery of validation images, worst first, filterable by class and error
kind. Two runs: RUN_A/compare_<RUN_B's name>.html with both runs' curves overlaid, per-class AP deltas
and the images where they disagree most. The page is one self-contained file: it opens from disk
with no server and no network. A run killed early gets a report of what exists.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from detkit.cli.command import report_error, run_standalone
from detkit.errors import DetkitError

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``detkit report``."""
    from detkit.vis import DEFAULT_DRAW_THRESHOLD

    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run folder (output.dir), or two to compare")
    parser.add_argument("--output", help="the HTML file to write (default: RUN_DIR/report.html, or "
                                         "RUN_A/compare_<B>.html for two runs)")
    parser.add_argument("--draw-threshold", type=float, default=DEFAULT_DRAW_THRESHOLD,
                        help="detections scoring at least this are drawn and counted in the error analysis "
                             f"(default {DEFAULT_DRAW_THRESHOLD})")
    parser.add_argument("--gallery-size", type=int, default=None,
                        help="validation images in the gallery, most errors first (default 100; 24 pairs "
                             "when comparing)")


def run(args: argparse.Namespace) -> int:
    """Report as ``args`` say; 0 when the page is written, 1 on a user error, 2 for more than two runs."""
    from detkit.report.compare import DEFAULT_DISAGREEMENTS, write_comparison
    from detkit.report.run_report import DEFAULT_GALLERY_SIZE, write_report

    if len(args.runs) > 2:
        return report_error(DetkitError(f"give one run folder to report on, or two to compare; got "
                                        f"{len(args.runs)}: {' '.join(args.runs)}"), 2)
    if not 0.0 <= args.draw_threshold <= 1.0:
        return report_error(DetkitError(f"--draw-threshold must be a score in [0, 1], got {args.draw_threshold}"), 2)
    if args.gallery_size is not None and args.gallery_size < 0:
        return report_error(DetkitError(f"--gallery-size must be 0 or more, got {args.gallery_size}"), 2)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731  (stdout keeps the path written)
    try:
        if len(args.runs) == 1:
            size = DEFAULT_GALLERY_SIZE if args.gallery_size is None else args.gallery_size
            path = write_report(args.runs[0], args.output, draw_threshold=args.draw_threshold, gallery_size=size,
                                log=log)
        else:
            size = DEFAULT_DISAGREEMENTS if args.gallery_size is None else args.gallery_size
            path = write_comparison(args.runs[0], args.runs[1], args.output, draw_threshold=args.draw_threshold,
                                    limit=size, log=log)
    except DetkitError as exc:
        return report_error(exc, 1)
    print(path)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detkit report`` as a program of its own."""
    return run_standalone(__doc__, add_arguments, run, argv)
