"""The one installed command, ``detkit COMMAND [flags] [key=value ...]`` (also ``python -m detkit``).

    detkit train    train a detector (default: configs/synthetic.yaml, the built-in synthetic set)
    detkit eval     COCO metrics of a checkpoint on a split
    detkit infer    detect in images with a checkpoint or an exported model
    detkit export   write an ONNX or TorchScript file and verify it against the eager model
    detkit report   the HTML report of a run (curves, metrics, error-analysis gallery), or two runs compared
    detkit lint     what a data set holds and every fix it needs (JSON + PNG)
    detkit anchors  compare the anchor sizing modes on a config's training split
    detkit convert  a VOC or YOLO folder (or a config's split) as a COCO JSON file

Settings are passed one way everywhere: positional ``dotted.key=value`` config overrides.
Each subcommand is a module here with ``add_arguments(parser)``, ``run(args) -> int`` and
``main(argv)``; the tools/*.py scripts call those ``main`` functions, so they take the same flags.
The modules parse arguments only: what a command does is a function of detkit that a test can call.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Dict, Optional, Sequence

from detkit.cli import anchors, convert, export, infer, lint, report, train
from detkit.cli import eval as eval_command
from detkit.cli.command import new_parser, report_error
from detkit.errors import DetkitError
from detkit.version import __version__

__all__ = ["COMMANDS", "DESCRIPTION", "build_parser", "subcommand_parser", "main"]

DESCRIPTION = """Train, evaluate, run and export two-stage object detectors.

Settings are passed one way everywhere: positional dotted key=value config overrides, e.g.
`detkit train --config configs/bccd_r18_fpn.yaml train.epochs=4 train.lr=0.01`.
`detkit COMMAND --help` shows a command's flags."""

# Subcommand name -> its module, in the order `detkit --help` lists them.
COMMANDS: Dict[str, ModuleType] = {"train": train, "eval": eval_command, "infer": infer, "export": export,
                                   "report": report, "lint": lint, "anchors": anchors, "convert": convert}


def build_parser(prog: str = "detkit") -> argparse.ArgumentParser:
    """The top-level parser: ``--version`` and one subparser per entry of :data:`COMMANDS`, each
    carrying its module's ``run`` as ``args.run``."""
    parser = new_parser(DESCRIPTION, prog=prog)
    parser.add_argument("--version", action="version", version=f"detkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        summary = module.__doc__.strip().splitlines()[0]
        sub = commands.add_parser(name, help=summary, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def subcommand_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The subparser of ``command`` in a parser made by :func:`build_parser`."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``detkit`` with ``argv`` (default: sys.argv[1:]); returns the exit status.

    Each subcommand reports its own user errors with its own status (export, lint and convert use 2, as
    their scripts always did); a DetkitError that still gets here is printed as ``error: ...`` with status 1.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # The top level finds the command (and answers --help, --version and mistakes); the command's own
    # arguments are then parsed intermixed (see detkit.cli.command), which argparse cannot do through
    # subparsers. Every token before the command is a top-level flag, so its first occurrence is the command.
    command = parser.parse_known_args(argv)[0].command
    args = subcommand_parser(parser, command).parse_intermixed_args(argv[argv.index(command) + 1:])
    try:
        return args.run(args)
    except DetkitError as exc:
        return report_error(exc, 1)
