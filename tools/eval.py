"""`detkit eval` as a script, for existing command lines: `python tools/eval.py ARGS` = `detkit eval ARGS`.

Same flags (see `detkit eval --help`); needs detkit installed (`pip install -e .` in the repository).
"""

import sys

from detkit.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
