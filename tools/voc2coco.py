"""`detkit convert` as a script, for existing command lines: `python tools/voc2coco.py ARGS` = `detkit convert ARGS`.

Same flags (see `detkit convert --help`); needs detkit installed (`pip install -e .` in the repository).
"""

import sys

from detkit.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
