"""`detkit infer` as a script, for existing command lines: `python tools/infer.py ARGS` = `detkit infer ARGS`.

Same flags (see `detkit infer --help`); needs detkit installed (`pip install -e .` in the repository).
"""

import sys

from detkit.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
