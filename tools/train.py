"""`detkit train` as a script, for existing command lines: `python tools/train.py ARGS` = `detkit train ARGS`.

Same flags (see `detkit train --help`); needs detkit installed (`pip install -e .` in the repository).
"""

import sys

from detkit.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
