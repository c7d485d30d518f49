"""The doctests of the tools modules that have some (``testpaths`` collects doctests from
the engine and the contracts only)."""

from __future__ import annotations

import doctest
import importlib

import pytest

NAMES = [
    "backtest",
    "bench",
    "bench_engine",
    "demo",
    "fleetsim",
    "progress",
    "replay",
    "scoring",
    "soak",
    "tail",
    "traces",
]


@pytest.mark.parametrize("name", NAMES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(f"tools.{name}"), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
