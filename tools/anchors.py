"""`detkit anchors` as a script, for existing command lines: `python tools/anchors.py ARGS` = `detkit anchors ARGS`.

Same flags (see `detkit anchors --help`); needs detkit installed (`pip install -e .` in the repository).
"""

import sys

from detkit.cli.anchors import main

if __name__ == "__main__":
    sys.exit(main())
