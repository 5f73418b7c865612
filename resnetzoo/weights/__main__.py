"""``python -m resnetzoo.weights``: see ``resnetzoo.weights.cli``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
