"""``python -m detkit COMMAND ...``: the installed ``detkit`` command, for environments without its script."""

import sys

from detkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
