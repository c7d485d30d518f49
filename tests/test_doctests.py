"""The doctests of the agents, streams and tools modules (``testpaths`` collects doctests
from the engine and the contracts only). Left out: ``streams.broker``, whose example starts
a broker and is skipped, and the modules with no examples."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "agents.control",
    "agents.usage",
    *(
        f"streams.{name}"
        for name in (
            "batching",
            "checkpoint",
            "collector",
            "control_auth",
            "control_feed",
            "healthstore",
            "kafka",
            "loop",
            "offsets",
            "partitioning",
            "prometheus",
            "publishers",
            "runtime",
            "security",
            "sending",
            "settings",
            "shutdown",
        )
    ),
    *(
        f"tools.{name}"
        for name in (
            "backtest",
            "capacity",
            "bench_report",
            "bench_worker",
            "bench_engine",
            "bench_probe",
            "demo",
            "fleet",
            "fleetsim",
            "hostile",
            "progress",
            "replay",
            "scoring",
            "soak",
            "tail",
            "traces",
            "workerproc",
        )
    ),
    "streams.executor.adapters",
    "tools.executor_bench",
]


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
