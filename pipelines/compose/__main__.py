"""``python -m pipelines.compose``: see :mod:`pipelines.compose.cli`."""

import sys

from pipelines.compose.cli import main

if __name__ == "__main__":
    sys.exit(main())
