"""The doctest examples in kroncl.adapters are part of the contract: run them."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["kroncl.adapters.math", "kroncl.adapters.layers", "kroncl.adapters.inject", "pipelines.bench.adapters"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no doctest examples"
    assert result.failed == 0
