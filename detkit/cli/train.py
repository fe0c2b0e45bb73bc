"""Train a detector. With no arguments: the built-in synthetic set (configs/synthetic.yaml).

    detkit train [--config CFG] [--output-dir DIR] [--resume] [--weights PATH|torchvision:NAME]
                 [--device cpu|cuda] [--seed N] [--quiet] [key=value ...]

key=value pairs are config overrides (e.g. train.lr=0.01 data.min_size=[480]); the flags set keys
too (--output-dir output.dir, --weights model.weights, --device train.device, --seed train.seed).
Under torchrun (`torchrun --nproc_per_node N -m detkit train ...`) every process runs this command;
rank 0 alone prints, writes metrics, plots, checkpoints and, at the end, report.html
(output.report; `detkit report RUN_DIR` writes it any time).
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from detkit.cli.command import report_error, run_standalone
from detkit.cli.default_config import DEFAULT_CONFIG, default_config_path
from detkit.errors import DetkitError

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``detkit train`` (those of tools/train.py)."""
    parser.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--output-dir", help="output folder (sets output.dir)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the output folder from last.pt")
    parser.add_argument("--weights", help="start the whole detector from these weights (sets model.weights): a detkit "
                        "checkpoint, a torchvision detection state dict, or torchvision:<Enum>.<MEMBER>, e.g. "
                        "torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1; a ResNet backbone alone: "
                        "model.backbone.weights=PATH")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (sets train.device)")
    parser.add_argument("--seed", type=int, help="sets train.seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.01")


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` say; 0 when the run finished, 1 on a user error (printed)."""
    # Imported here, not at the top: `detkit --help` and the other subcommands need not load the trainer.
    from detkit.config import load_config
    from detkit.report.training import train
    from detkit.runtime.device import resolve_device

    overrides = list(args.overrides)
    for flag, key in ((args.output_dir, "output.dir"), (args.weights, "model.weights"),
                      (args.device, "train.device"), (args.seed, "train.seed")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    try:
        if args.device is not None:  # named as the option given (train() checks train.device of the config)
            resolve_device(args.device, key="--device")
        config = args.config if args.config is not None else default_config_path()
        train(load_config(config, overrides), resume=args.resume, quiet=args.quiet)
    except DetkitError as exc:
        return report_error(exc, 1)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detkit train`` as a program of its own (tools/train.py)."""
    return run_standalone(__doc__, add_arguments, run, argv)
