"""The doctests of the streams modules that run without a worker or a broker (the Faust
app's module, ``streams.app``, registers the agents when imported; ``streams.broker``'s
example starts a broker and is skipped)."""

from __future__ import annotations

import doctest
import importlib

import pytest

NAMES = [
    "batching",
    "checkpoint",
    "healthstore",
    "kafka",
    "loop",
    "metrics",
    "partitioning",
    "security",
    "settings",
]


@pytest.mark.parametrize("name", NAMES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(
        importlib.import_module(f"streams.{name}"), optionflags=doctest.ELLIPSIS
    )
    assert result.attempted > 0
    assert result.failed == 0
