"""kroncl: continual multi-task fine-tuning with Kron-LoRA adapters.

Library of parts (adapters, data, models, strategy, metrics, quant, tracking); the end-to-end
job lives in ``pipelines/`` and is started by ``python -m kroncl.run``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # The installed distribution's version (pyproject.toml), so a wheel and its records agree.
    __version__ = version("kroncl")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
