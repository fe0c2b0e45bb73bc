"""Detect objects in images with a trained checkpoint.

    python tools/infer.py --checkpoint runs/synthetic/best.pt INPUT [INPUT ...]
                          [--output-dir DIR] [--score-threshold T] [--batch-size B] [--device D]

INPUT is an image file, a folder (its image files) or a glob pattern. Writes each image with its
boxes drawn and one detections.json (COCO results format plus file names) into the output folder.
An unreadable image is reported and skipped; the exit status is 1 when any input failed.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.engine.inference import load_trained_model  # noqa: E402
from detkit.engine.predict import expand_inputs, predict_files  # noqa: E402
from detkit.errors import DetkitError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a detkit checkpoint (best.pt or last.pt)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--output-dir", default="runs/infer", help="where drawn images and detections.json go")
    parser.add_argument("--score-threshold", type=float, help="keep detections at or above this score")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = [] if args.score_threshold is None else [f"model.roi_head.score_thresh={args.score_threshold}"]
    try:
        model, cfg, ckpt = load_trained_model(args.checkpoint, overrides=overrides)
        paths, problems = expand_inputs(args.inputs)
        for item, reason in problems:
            print(f"skipped: {item}: {reason}", file=sys.stderr)
        summary = predict_files(model, cfg, ckpt["classes"], ckpt.get("category_ids") or
                                list(range(1, len(ckpt["classes"]) + 1)), paths, output_dir=args.output_dir,
                                batch_size=max(1, args.batch_size), device=args.device, progress=not args.quiet,
                                log=lambda m: print(m, file=sys.stderr))
    except DetkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = len(summary["failed"]) + len(problems)
    print(f"{summary['processed']} image(s) processed, {summary['detections']} detection(s), {failed} failed; "
          f"outputs in {args.output_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
