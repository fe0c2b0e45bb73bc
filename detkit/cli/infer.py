"""Detect objects in images and videos with a trained checkpoint or an exported model.

    detkit infer --checkpoint runs/synthetic/best.pt INPUT [INPUT ...] [key=value ...]
                 [--output-dir DIR] [--score-threshold T] [--draw-threshold T] [--every N]
                 [--batch-size B] [--device D] [--precision auto|fp32|bf16|fp16] [--quiet]
    detkit infer --model model.onnx | model.ts.pt INPUT [INPUT ...] [--output-dir DIR]
                 [--score-threshold T] [--draw-threshold T] [--every N] [--quiet]

INPUT is an image file, a video file (.mp4 .avi .mov .mkv .webm .m4v), a folder (its image and video
files) or a glob pattern. A key=value token whose key is a dotted config key (e.g. eval.fold_bn=false,
model.roi_head.nms_thresh=0.6) changes an inference setting of the checkpoint's config, unless a file
of that name exists (then it is an input). --checkpoint given more than once runs the checkpoints (of the
same classes) as one ensemble, averaged per proposal (detkit.modeling.ensemble).

Writes into the output folder each image with its boxes drawn (an image under 640 pixels is upscaled
for drawing, so the drawing can be larger than the input) and one detections.json (COCO results format
plus file names) with every detection scoring at least --score-threshold; only those scoring at least
--draw-threshold (default 0.3) are drawn. For a video clip.avi it writes clip.mp4 (every frame, the
input's size and frame rate, with the latest detections drawn) and clip.jsonl (one line per processed
frame: frame, time, detections); --every N detects on every N-th frame only. An unreadable image or
video is reported and skipped; the exit status is 1 when any input failed.

--model runs a file written by `detkit export`: ONNX through ONNX Runtime (CPU) or TorchScript, one
image at a time; its resize and thresholds are baked in (--score-threshold can only raise the threshold).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List, Optional, Sequence, Tuple

from detkit.cli.command import report_error, run_standalone
from detkit.errors import DetkitError
from detkit.runtime.precision import PRECISIONS
from detkit.vis import DEFAULT_DRAW_THRESHOLD

__all__ = ["add_arguments", "run", "main", "split_overrides", "OVERRIDE_PATTERN"]

# A dotted config key assignment: section.key=..., section.sub.key=... A bare name=value is not one,
# so that image files named like 'a=b.jpg' stay inputs even before the file check.
OVERRIDE_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


def split_overrides(tokens: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(inputs, overrides) of the positional tokens: a dotted ``key=value`` that names no existing file or
    folder is an override, anything else an input; the order within each list is kept."""
    inputs, overrides = [], []
    for token in tokens:
        is_override = OVERRIDE_PATTERN.match(token) is not None and not os.path.exists(token)
        (overrides if is_override else inputs).append(token)
    return inputs, overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``detkit infer`` (those of tools/infer.py)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", action="append",
                        help="a detkit checkpoint (best.pt or last.pt); repeat it for an ensemble of several "
                             "checkpoints of the same classes")
    source.add_argument("--model", help="an exported model (.onnx or TorchScript) written by detkit export")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image or video files, folders or glob patterns; dotted key=value tokens are config "
                             "overrides of the checkpoint, e.g. eval.fold_bn=false")
    parser.add_argument("--output-dir", default="runs/infer",
                        help="where drawn images, detections.json and annotated videos go")
    parser.add_argument("--score-threshold", type=float, help="keep detections at or above this score")
    parser.add_argument("--draw-threshold", type=float, default=DEFAULT_DRAW_THRESHOLD,
                        help="draw only detections at or above this score; the JSON outputs keep every detection "
                             f"(default {DEFAULT_DRAW_THRESHOLD})")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="in videos, detect on every N-th frame; the frames between show the latest detections "
                             "(default 1: every frame)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="autocast of inference (default: the checkpoint's eval.precision, normally auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # Deprecated: settings are positional key=value in every command now. Kept, hidden, so that
    # existing command lines still run.
    parser.add_argument("--set", dest="set_overrides", action="append", default=[], metavar="key=value",
                        help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Infer as ``args`` say; 0 when every input was processed, 1 when any failed or on a user error."""
    from detkit.deploy.infer_files import infer_inputs

    inputs, overrides = split_overrides(args.inputs)
    if args.set_overrides:
        print("note: --set is deprecated: pass key=value directly, e.g. "
              f"detkit infer ... {' '.join(args.set_overrides)}", file=sys.stderr)
        overrides += args.set_overrides
    if not inputs:
        return report_error(DetkitError(f"no INPUT given, only the config overrides {' '.join(overrides)}: "
                                        "name image files, folders or glob patterns to detect in"), 2)
    if args.precision is not None:
        overrides.append(f"eval.precision={args.precision}")
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731  (stdout keeps the one summary line)
    try:
        summary = infer_inputs(inputs, output_dir=args.output_dir, checkpoint=args.checkpoint, exported=args.model,
                               overrides=overrides, device=args.device, batch_size=args.batch_size,
                               score_threshold=args.score_threshold, progress=not args.quiet, log=log,
                               draw_threshold=args.draw_threshold, every=args.every)
    except DetkitError as exc:
        return report_error(exc, 1)
    failed = len(summary["failed"])
    videos = (f"{summary['videos']} video(s) ({summary['frames']} frame(s)) processed, "
              if summary.get("videos") else "")
    print(f"{summary['processed']} image(s) processed, {videos}{summary['detections']} detection(s), "
          f"{failed} failed; outputs in {args.output_dir}")
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detkit infer`` as a program of its own (tools/infer.py)."""
    return run_standalone(__doc__, add_arguments, run, argv)
