"""`detkit report` as a script, for existing command lines: `python tools/report.py ARGS` = `detkit report ARGS`.

Same flags (see `detkit report --help`); needs detkit installed (`pip install -e .` in the repository).
"""

import sys

from detkit.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
