"""What every subcommand module of :mod:`detkit.cli` shares: its stand-alone parser and its error line.

A subcommand module holds ``add_arguments(parser)`` and ``run(args) -> int``; ``detkit COMMAND`` adds
those arguments to a subparser, and the module's ``main(argv)`` (what tools/*.py call) builds a parser
of its own with :func:`run_standalone`, so both accept exactly the same flags.

Both parse with ``parse_intermixed_args``: positional tokens (key=value overrides, infer's inputs) may
come before, between or after the flags, as users write them (``detkit infer --checkpoint C photos/
--quiet eval.fold_bn=false``); plain ``parse_args`` stops taking positionals at the first flag.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from detkit.errors import DetkitError

__all__ = ["new_parser", "run_standalone", "report_error"]


def new_parser(description: str, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """A parser whose help shows ``description`` (a module docstring) as written, usage lines included."""
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def run_standalone(description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                   run: Callable[[argparse.Namespace], int], argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) with a parser of the subcommand's own, then run it."""
    parser = new_parser(description)
    add_arguments(parser)
    return run(parser.parse_intermixed_args(None if argv is None else list(argv)))


def report_error(exc: DetkitError, code: int) -> int:
    """Print ``error: <message>`` to stderr (a user's mistake: no traceback) and return the exit status."""
    print(f"error: {exc}", file=sys.stderr)
    return code
