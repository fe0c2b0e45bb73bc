"""Evaluate a checkpoint with the COCO metrics (and VOC mAP@0.5) on a data set split.

    python tools/eval.py --checkpoint CKPT [--config CFG] [--split NAME] [--output-dir DIR] [--precise-bn N]
                         [--trained-weights] [--precision auto|fp32|bf16|fp16] [key=value ...]

Without --config the checkpoint's own config (data paths included) is used; key=value overrides
change it (e.g. data.val.splits=[test]). --split train|val picks the config's training or validation
split; any other NAME is a VOC split (ImageSets/Main/NAME.txt) read from the validation roots.
Prints the COCO table and the per-class AP table; writes eval.json and detections.json. The model runs
as eval.precision says (--precision overrides it) with its BatchNorm folded (eval.fold_bn=false keeps it).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.errors import DetkitError  # noqa: E402
from detkit.evaluation.evaluate import evaluate_checkpoint  # noqa: E402
from detkit.runtime.device import resolve_device  # noqa: E402
from detkit.runtime.precision import PRECISIONS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", help="YAML config to use instead of the checkpoint's (model must match)")
    parser.add_argument("--split", help="train, val (default) or a VOC split name")
    parser.add_argument("--output-dir", help="where eval.json and detections.json go (default: beside the checkpoint)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="N",
                        help="first re-estimate the BatchNorm statistics over N training batches with the "
                             "checkpoint's weights (default 0: keep the checkpoint's statistics)")
    parser.add_argument("--trained-weights", action="store_true",
                        help="for a checkpoint of a train.ema_decay run: evaluate the trained weights it saved "
                             "as 'train_model' instead of their moving average (combine with --precise-bn)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="autocast of the evaluation (default: the config's eval.precision, normally auto)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.precise_bn < 0:
        print(f"error: --precise-bn {args.precise_bn}: give a number of training batches >= 0 (0 = off)",
              file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    if args.precision is not None:
        overrides.append(f"eval.precision={args.precision}")
    output_dir = args.output_dir or os.path.dirname(os.path.abspath(args.checkpoint))
    try:
        resolve_device(args.device, key="--device")
        evaluate_checkpoint(args.checkpoint, config_path=args.config, overrides=overrides, split=args.split,
                            output_dir=output_dir, device=args.device, precise_bn_batches=args.precise_bn,
                            progress=not args.quiet, weights="train_model" if args.trained_weights else "model")
    except DetkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
