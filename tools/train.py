"""Train a detector. With no arguments: the built-in synthetic set (configs/synthetic.yaml).

    python tools/train.py [--config CFG] [--output-dir DIR] [--resume] [--weights PATH]
                          [--device cpu|cuda] [--seed N] [--quiet] [key=value ...]

Under torchrun (`torchrun --nproc_per_node N tools/train.py ...`) every process runs this script;
rank 0 alone prints, writes metrics, plots and checkpoints.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.config import load_config  # noqa: E402
from detkit.engine.trainer import train  # noqa: E402
from detkit.errors import DetkitError  # noqa: E402
from detkit.runtime.device import resolve_device  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "synthetic.yaml")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: configs/synthetic.yaml)")
    parser.add_argument("--output-dir", help="output folder (sets output.dir)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the output folder from last.pt")
    parser.add_argument("--weights", help="initial weights: a torchvision ResNet state dict or a detkit checkpoint")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (sets train.device)")
    parser.add_argument("--seed", type=int, help="sets train.seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.01")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    for flag, key in ((args.output_dir, "output.dir"), (args.weights, "model.backbone.weights"),
                      (args.device, "train.device"), (args.seed, "train.seed")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    try:
        if args.device is not None:  # named as the option given (train() checks train.device of the config)
            resolve_device(args.device, key="--device")
        train(load_config(args.config, overrides), resume=args.resume, quiet=args.quiet)
    except DetkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
