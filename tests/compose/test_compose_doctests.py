"""The doctest examples in kroncl.compose are part of its contract: run them."""

from __future__ import annotations

import doctest

import kroncl.compose


def test_compose_doctests():
    result = doctest.testmod(kroncl.compose, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
