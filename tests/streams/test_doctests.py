"""The doctests of the streams modules that run without a worker or a broker (the Faust
app's module, ``streams.app``, registers the agents when imported; ``streams.broker``'s
example starts a broker and is skipped)."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from streams import (
    batching,
    checkpoint,
    healthstore,
    kafka,
    loop,
    metrics,
    partitioning,
    security,
    settings,
)

MODULES = [
    batching,
    checkpoint,
    healthstore,
    kafka,
    loop,
    metrics,
    partitioning,
    security,
    settings,
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
