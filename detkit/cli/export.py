"""Export a trained checkpoint to ONNX or TorchScript and verify the file against the eager model.

    detkit export --checkpoint CKPT --format onnx|torchscript --output FILE [--opset N]
                  [--verify-images PATH ...] [--verify-split val] [--no-verify]
                  [--box-tol PX] [--score-tol S] [--map-tol M] [key=value ...]

The exported model takes one RGB image as uint8 (H, W, 3), any height and width, and returns boxes
(float32 (D, 4), x1 y1 x2 y2 in that image's pixels), scores and labels (1..K); resize,
normalisation, backbone, RPN, NMS, RoIAlign, box head and post-processing are all inside the graph.
Class names travel in the file's metadata. `detkit infer --model FILE` runs it.

After writing, the command compares the file with the eager model on a few val images (or
--verify-images) and three differently shaped crops of the first, and with --verify-split on the
COCO mAP of a whole split. The report is printed and written to FILE.verify.json; the exit status
is 1 when a difference exceeds the tolerances (the file is kept for inspection), 2 on an error.
key=value overrides change inference settings baked into the graph (e.g. model.roi_head.score_thresh=0.3);
settings the graph cannot compute (soft-NMS, flip test-time augmentation) are all named in one error
with the overrides that export the single-pass equivalent.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from detkit.cli.command import report_error, run_standalone
from detkit.deploy.export import DEFAULT_OPSET, FORMATS
from detkit.deploy.export_verify import Tolerances
from detkit.errors import DetkitError

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``detkit export`` (those of tools/export.py)."""
    defaults = Tolerances()
    parser.add_argument("--checkpoint", required=True, help="a detkit checkpoint (best.pt or last.pt)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="the file to write (e.g. model.onnx, model.ts.pt)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--verify-images", nargs="+", metavar="PATH", help="images to compare eager and exported on")
    parser.add_argument("--verify-split", choices=("train", "val"), help="also compare COCO mAP over this split")
    parser.add_argument("--no-verify", action="store_true", help="write the file without comparing")
    parser.add_argument("--box-tol", type=float, default=defaults.box, help=f"pixels (default {defaults.box})")
    parser.add_argument("--score-tol", type=float, default=defaults.score, help=f"default {defaults.score}")
    parser.add_argument("--map-tol", type=float, default=defaults.map, help=f"default {defaults.map}")
    parser.add_argument("overrides", nargs="*", metavar="key=value")


def run(args: argparse.Namespace) -> int:
    """Export as ``args`` say; 0 when verified (or not verified), 1 when beyond tolerance, 2 on a user error."""
    from detkit.deploy.export import export_checkpoint

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        report = export_checkpoint(args.checkpoint, args.format, args.output, opset=args.opset,
                                   overrides=args.overrides, verify_images=args.verify_images,
                                   verify_split=args.verify_split, verify=not args.no_verify,
                                   tolerances=Tolerances(box=args.box_tol, score=args.score_tol, map=args.map_tol),
                                   log=log)
    except DetkitError as exc:
        return report_error(exc, 2)
    return 0 if report["passed"] else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detkit export`` as a program of its own (tools/export.py)."""
    return run_standalone(__doc__, add_arguments, run, argv)
