"""Evaluate a checkpoint with the COCO metrics (and VOC mAP@0.5) on a data set split.

    detkit eval --checkpoint CKPT [--checkpoint CKPT ...] [--config CFG] [--split NAME] [--output-dir DIR]
                [--precise-bn N] [--trained-weights] [--precision auto|fp32|bf16|fp16] [--device D] [--quiet]
                [key=value ...]

Without --config the checkpoint's own config (data paths included) is used; key=value overrides
change it (e.g. data.val.splits=[test]). --split train|val picks the config's training or validation
split; any other NAME is a VOC split (ImageSets/Main/NAME.txt) read from the validation roots.
Prints the COCO table and the per-class AP table; writes eval.json and detections.json. The model runs
as eval.precision says (--precision overrides it) with its BatchNorm folded (eval.fold_bn=false keeps it).
Several --checkpoint flags (checkpoints of the same classes) are evaluated as one ensemble: every
member's RoI head scores every member's proposals, averaged per proposal (detkit.modeling.ensemble);
the first checkpoint's config gives the data set and post-processing, and eval.json goes to an
ensemble/ folder beside it.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from detkit.cli.command import report_error, run_standalone
from detkit.errors import ConfigError, DetkitError
from detkit.runtime.precision import PRECISIONS

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``detkit eval`` (those of tools/eval.py)."""
    parser.add_argument("--checkpoint", required=True, action="append",
                        help="a detkit checkpoint (best.pt); repeat it to evaluate several checkpoints of the same "
                             "classes as one ensemble")
    parser.add_argument("--config", help="YAML config to use instead of the checkpoint's (model must match)")
    parser.add_argument("--split", help="train, val (default) or a VOC split name")
    parser.add_argument("--output-dir", help="where eval.json and detections.json go (default: beside the checkpoint)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="N",
                        help="first re-estimate the BatchNorm statistics over N training batches with the "
                             "checkpoint's weights (default 0: keep the checkpoint's statistics)")
    parser.add_argument("--trained-weights", action="store_true",
                        help="for a train.ema_decay run's last.pt: evaluate the trained weights it saved as "
                             "'train_model' instead of their moving average (best.pt keeps the average alone; "
                             "combine with --precise-bn)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="autocast of the evaluation (default: the config's eval.precision, normally auto)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")


def run(args: argparse.Namespace) -> int:
    """Evaluate as ``args`` say; 0 when done, 1 on a user error, 2 for a negative --precise-bn (a usage error)."""
    from detkit.evaluation.evaluate import evaluate_checkpoint
    from detkit.runtime.device import resolve_device

    if args.precise_bn < 0:
        return report_error(ConfigError(f"--precise-bn {args.precise_bn}: give a number of training batches >= 0 "
                                        f"(0 = off)"), 2)
    overrides = list(args.overrides)
    if args.precision is not None:
        overrides.append(f"eval.precision={args.precision}")
    beside = os.path.dirname(os.path.abspath(args.checkpoint[0]))
    output_dir = args.output_dir or (beside if len(args.checkpoint) == 1 else os.path.join(beside, "ensemble"))
    try:
        resolve_device(args.device, key="--device")
        evaluate_checkpoint(args.checkpoint, config_path=args.config, overrides=overrides, split=args.split,
                            output_dir=output_dir, device=args.device, precise_bn_batches=args.precise_bn,
                            progress=not args.quiet, weights="train_model" if args.trained_weights else "model")
    except DetkitError as exc:
        return report_error(exc, 1)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detkit eval`` as a program of its own (tools/eval.py)."""
    return run_standalone(__doc__, add_arguments, run, argv)
