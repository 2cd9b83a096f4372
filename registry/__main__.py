"""``python -m registry``: see :mod:`registry.cli`."""

import sys

from registry.cli import main

if __name__ == "__main__":
    sys.exit(main())
