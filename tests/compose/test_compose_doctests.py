"""The doctest examples in kroncl.composition are part of its contract: run them."""

from __future__ import annotations

import doctest

import pytest

import kroncl.composition.compatible

# kron_as_lora's example moved with it to kroncl.adapters.math (run by tests/adapters/test_adapters_doctests.py).
MODULES = [kroncl.composition.compatible]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_composition_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 1 and result.failed == 0


def test_composition_doctests_cover_the_pure_functions():
    finder = doctest.DocTestFinder()
    names = {t.name.rpartition(".")[2] for m in MODULES for t in finder.find(m) if t.examples}
    assert {"set_name_for", "layer_tensors"} <= names
