"""`detkit lint` as a script, for existing command lines: `python tools/lint_data.py ARGS` = `detkit lint ARGS`.

Same flags (see `detkit lint --help`); needs detkit installed (`pip install -e .` in the repository).
"""

import sys

from detkit.cli.lint import main

if __name__ == "__main__":
    sys.exit(main())
