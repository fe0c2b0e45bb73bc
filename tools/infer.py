"""Detect objects in images with a trained checkpoint or an exported model.

    python tools/infer.py --checkpoint runs/synthetic/best.pt INPUT [INPUT ...]
                          [--output-dir DIR] [--score-threshold T] [--batch-size B] [--device D]
                          [--precision auto|fp32|bf16|fp16] [--set key=value ...]
    python tools/infer.py --model model.onnx | model.ts.pt INPUT [INPUT ...] [--output-dir DIR]
                          [--score-threshold T]

--model runs a file written by tools/export.py: ONNX through ONNX Runtime (CPU) or TorchScript, one
image at a time; its resize and thresholds are baked in (--score-threshold can only raise the threshold).

INPUT is an image file, a folder (its image files) or a glob pattern. Writes each image with its
boxes drawn and one detections.json (COCO results format plus file names) into the output folder.
An unreadable image is reported and skipped; the exit status is 1 when any input failed.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.deploy.exported_model import load_exported  # noqa: E402
from detkit.deploy.infer_files import expand_inputs, predict_files  # noqa: E402
from detkit.errors import DetkitError, ExportError  # noqa: E402
from detkit.runtime.device import resolve_device  # noqa: E402
from detkit.runtime.precision import PRECISIONS  # noqa: E402
from detkit.weights.trained_model import load_trained_model, prepare_inference  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a detkit checkpoint (best.pt or last.pt)")
    source.add_argument("--model", help="an exported model (.onnx or TorchScript) written by tools/export.py")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--output-dir", default="runs/infer", help="where drawn images and detections.json go")
    parser.add_argument("--score-threshold", type=float, help="keep detections at or above this score")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="autocast of inference (default: the checkpoint's eval.precision, normally auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="key=value",
                        help="change an inference setting of the checkpoint's config, e.g. eval.fold_bn=false")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.score_threshold is not None:
        overrides.append(f"model.roi_head.score_thresh={args.score_threshold}")
    if args.precision is not None:
        overrides.append(f"eval.precision={args.precision}")
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        if args.model is not None:
            if args.overrides or args.precision or args.device != "cpu":
                raise ExportError("--set, --precision and --device apply to --checkpoint; an exported --model runs "
                                  "on the CPU with the settings baked in at export (re-export to change them)")
            model, cfg, precision = load_exported(args.model), None, None
            classes, category_ids, threshold = model.classes, model.category_ids, args.score_threshold
        else:
            resolve_device(args.device, key="--device")
            model, cfg, ckpt = load_trained_model(args.checkpoint, overrides=overrides)
            precision = prepare_inference(model, cfg, torch.device(args.device), log=log)
            classes, threshold = ckpt["classes"], None
            category_ids = ckpt.get("category_ids") or list(range(1, len(classes) + 1))
        paths, problems = expand_inputs(args.inputs)
        for item, reason in problems:
            print(f"skipped: {item}: {reason}", file=sys.stderr)
        summary = predict_files(model, cfg, classes, category_ids, paths, output_dir=args.output_dir,
                                batch_size=max(1, args.batch_size), device=args.device, progress=not args.quiet,
                                log=log, precision=precision, score_threshold=threshold)
    except DetkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = len(summary["failed"]) + len(problems)
    print(f"{summary['processed']} image(s) processed, {summary['detections']} detection(s), {failed} failed; "
          f"outputs in {args.output_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
