"""Compose a ready model from registered adapters: ``python -m pipelines.compose``.

The model-side parts live in :mod:`kroncl.composition`; this package is the registry side,
one module per step:

    registry -> choose versions (REF / --task, --bits)                   select.py
    -> one base model for all of them, its config from the versions    base.py
    -> [--weights: task arithmetic -> register the sum (merged_from every source) -> compose it]
                                                                        arithmetic.py
    -> fetch + verify artifacts -> rebuild the base model from the stored config
    -> attach adapters -> check the base weights are the registered ones -> [--merge]
                                                                        build.py (base.py)
    -> [--eval on test sets]                                            evaluation.py
    -> [--save]                                                         save.py
    -> [--export peft-lora|peft-lokr|merged DIR]                        export.py
    -> summary                                                          cli.py

The base model is rebuilt from ``config.run.model`` of the versions (what ``kroncl.run``
stores) unless ``--model`` / ``--model-opt`` say otherwise, and its content hash must equal
the registered base-model revision: an encoder's classifier head is newly initialised by
``model.seed``, so the same checkpoint with another seed is another base model, and adapters
trained on one would silently score garbage on the other.

Examples::

    python -m pipelines.compose --registry-url sqlite:///runs/registry.db tiny-toy_larger-kron:1 --merge
    python -m pipelines.compose --task toy_larger --task toy_smaller --bits 32 --eval
    python -m pipelines.compose A:1 B:1 --weights 0.5,0.5 --name toy-sum --eval
    python -m pipelines.compose tiny-toy_larger-kron:1 --export peft-lora served/toy_larger
"""

from __future__ import annotations

from pipelines.compose.arithmetic import COMPOSITION_KIND, combine
from pipelines.compose.base import check_one_base, model_node_for, verify_base
from pipelines.compose.build import Composition, compose
from pipelines.compose.cli import (
    EXIT_ERROR,
    build_parser,
    format_summary,
    main,
    run,
    summary_dict,
)
from pipelines.compose.evaluation import EvalResult, evaluate
from pipelines.compose.export import EXPORT_FORMATS, export_composition
from pipelines.compose.save import save_composition
from pipelines.compose.select import (
    newest_for_task,
    open_store,
    select_versions,
    why_chosen,
)

__all__ = [
    "COMPOSITION_KIND",
    "EXIT_ERROR",
    "Composition",
    "EvalResult",
    "open_store",
    "newest_for_task",
    "select_versions",
    "why_chosen",
    "check_one_base",
    "model_node_for",
    "verify_base",
    "compose",
    "combine",
    "evaluate",
    "save_composition",
    "EXPORT_FORMATS",
    "export_composition",
    "build_parser",
    "summary_dict",
    "format_summary",
    "run",
    "main",
]
