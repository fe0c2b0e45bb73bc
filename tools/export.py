"""`detkit export` as a script, for existing command lines: `python tools/export.py ARGS` = `detkit export ARGS`.

Same flags (see `detkit export --help`); needs detkit installed (`pip install -e .` in the repository).
"""

import sys

from detkit.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
