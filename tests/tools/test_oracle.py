"""The clairvoyant oracle of the suite report: its fewest cold starts for a wasted-memory
budget, and its figures beside hybrid's and warmcast's on synthetic families."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from tools.oracle import oracle_cold_starts
from tools.suite import load_suite, run_suite, summary_table

TRACE = {"a": [0, 1, 5, 30], "b": [3, 4, 20], "c": [7]}


def test_zero_budget_every_request_after_a_gap_is_cold() -> None:
    # gaps of idle 0 (consecutive minutes) cost nothing; every other later request is cold
    assert oracle_cold_starts(TRACE, 0) == (3 + 3, 0)


def test_infinite_budget_only_first_requests_cold() -> None:
    assert oracle_cold_starts(TRACE, math.inf)[0] == 3


def test_oracle_beats_fixed_keepalive_at_no_more_memory() -> None:
    for k in (1, 3, 10, 30):
        cold = waste = 0
        for ms in TRACE.values():
            cold += 1
            for m1, m2 in itertools.pairwise(ms):
                idle = m2 - m1 - 1
                if idle < k:
                    waste += idle
                else:
                    cold += 1
                    waste += k
        oc, used = oracle_cold_starts(TRACE, waste)
        assert used <= waste and oc <= cold


def test_train_prefix_not_counted() -> None:
    assert oracle_cold_starts({"a": [0, 10, 12]}, 1, train_minutes=5) == (1, 1)


def test_small_suite_report_has_oracle_columns() -> None:
    suite = load_suite(Path(__file__).parents[2] / "tools/suites/small.toml")
    suite.traces = suite.traces[:1]
    result = run_suite(suite, progress=False)
    table = summary_table(result)
    assert "oracle_cold@mem" in table and "cold-oracle@mem" in table
    o = result.to_dict()["traces"][0]["oracle"]
    assert f"{o['hybrid_minus_oracle']:+.0f}" in table
    assert o["oracle_cold_starts"] <= o["hybrid_cold_starts"]
    assert o["oracle_wasted_minutes"] <= o["budget_wasted_minutes"]
