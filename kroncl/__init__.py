"""kroncl: continual multi-task fine-tuning with Kron-LoRA adapters.

Library of parts (adapters, data, models, strategy, metrics, quant, tracking); the end-to-end
job lives in ``pipelines/`` and is started by ``python -m kroncl.run``.
"""

__version__ = "0.1.0"
