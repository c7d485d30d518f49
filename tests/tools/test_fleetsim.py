"""The fleet simulator's pure part: lease semantics, loads, accounting, agreement with the
backtest; and the doctests of the replay, fleet-sim, tail and demo modules."""

from __future__ import annotations

import doctest
import math
from types import ModuleType
from typing import Any

import pytest

from engine.policies import FixedKeepAlive
from tools import demo, fleetsim, replay, tail
from tools.backtest import run_backtest
from tools.fleet import (
    LOGNORMAL_MU,
    LOGNORMAL_SIGMA,
    FixedLoadTime,
    FleetState,
    LeaseBook,
    LocalFleet,
    run_local,
    slice_trace,
)
from tools.fleetsim import format_fleets, load_slice, prometheus_sum
from tools.traces import Trace

M = 60.0  # seconds in a minute; the fleet's minutes are epoch-aligned


def warm(model: str, issued: int, start: int, end: int, cid: str | None = None) -> dict[str, Any]:
    command: dict[str, Any] = {
        "model_id": model,
        "action": "warm",
        "issued_at": issued * M,
        "start": start * M,
        "end": end * M,
    }
    if cid is not None:
        command["command_id"] = cid
    return command


def release(model: str, issued: int) -> dict[str, Any]:
    return {
        "model_id": model,
        "action": "release",
        "issued_at": issued * M,
        "start": issued * M,
        "end": issued * M,
    }


def loaded(book: LeaseBook, model: str, minutes: range) -> list[int]:
    return [m for m in minutes if book.covers(model, m)]


@pytest.mark.parametrize("module", [replay, fleetsim, tail, demo], ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_a_command_rules_from_the_minute_after_it_was_issued() -> None:
    book = LeaseBook()
    book.apply(warm("m", issued=5, start=3, end=9))  # a start in the past starts at 6
    assert loaded(book, "m", range(12)) == [6, 7, 8]


def test_latest_command_wins_even_over_a_longer_lease() -> None:
    book = LeaseBook()
    book.apply(warm("m", issued=0, start=1, end=30))
    book.apply(warm("m", issued=4, start=12, end=15))  # overlapping, shorter: replaces
    assert loaded(book, "m", range(32)) == [1, 2, 3, 4, 12, 13, 14]


def test_a_late_arrival_is_placed_by_its_issue_minute() -> None:
    book = LeaseBook()
    book.apply(warm("m", issued=10, start=11, end=13))
    book.apply(warm("m", issued=2, start=3, end=20))  # decided earlier, arrived later
    assert loaded(book, "m", range(22)) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]


def test_release_unloads_and_a_lease_ends() -> None:
    book = LeaseBook()
    book.apply(warm("m", issued=0, start=1, end=10))
    book.apply(release("m", issued=3))
    book.apply(warm("m", issued=6, start=7, end=9))
    assert loaded(book, "m", range(12)) == [1, 2, 3, 7, 8]
    assert book.loaded_intervals("m", 0, 12) == [(1, 4), (7, 9)]


def test_same_minute_commands_latest_arrival_wins() -> None:
    book = LeaseBook()
    book.apply(warm("m", issued=0, start=1, end=5))
    book.apply(warm("m", issued=0, start=1, end=3))
    assert loaded(book, "m", range(6)) == [1, 2]


def test_duplicate_delivery_is_dropped_but_a_lease_decided_again_is_not() -> None:
    book = LeaseBook()
    assert book.apply(warm("m", 0, 1, 5, cid="A")) is not None
    assert book.apply(warm("m", 0, 1, 5, cid="A")) is None  # redelivered
    assert book.apply(release("m", 2) | {"command_id": "R"}) is not None
    assert book.apply(warm("m", 3, 1, 5, cid="A")) is not None  # same id, decided again
    assert loaded(book, "m", range(6)) == [1, 2, 4]


def test_cold_start_once_per_model_minute_and_on_demand_load_lasts_its_minute() -> None:
    fleet = FleetState(FixedLoadTime(20.0))
    step = fleet.step(100, [(100 * M + 5, "m", 1), (100 * M + 10, "m", 3), (100 * M, "n", 1)])
    assert [(o.model_id, o.cold, o.wait) for o in step.outcomes] == [
        ("m", True, 20.0),
        ("m", False, 15.0),  # waits for the rest of the load started at +5
        ("n", True, 20.0),
    ]
    assert [(ld.model_id, ld.on_demand) for ld in step.loads] == [("m", True), ("n", True)]
    step = fleet.step(101, [(101 * M, "m", 1)])  # no lease: unloaded, cold again
    assert sorted(step.unloaded) == ["m", "n"]
    assert [o.cold for o in step.outcomes] == [True]
    totals = fleet.totals()
    assert (totals.cold_starts, totals.requests, totals.requested_minutes) == (3, 6, 3)
    assert totals.cold_by_minute == (2, 1)


def test_a_lease_loads_ahead_of_its_start_when_it_was_issued_in_time() -> None:
    fleet = FleetState(FixedLoadTime(40.0))
    fleet.step(10, [(10 * M + 50, "m", 1)])
    fleet.apply(warm("m", issued=10, start=11, end=13))
    fleet.apply(warm("x", issued=10, start=11, end=12))
    step = fleet.step(11, [(11 * M, "m", 1), (11 * M + 1, "x", 1)])
    # m stays loaded from its cold start at 10:50 (ready 11:30: its request waits 30 s);
    # x loads from 10:20 and is ready at 11:00
    assert [(ld.model_id, ld.start, ld.ready) for ld in step.loads] == [("x", 620.0, 660.0)]
    assert [(o.cold, o.wait) for o in step.outcomes] == [(False, 30.0), (False, 0.0)]
    late = FleetState(FixedLoadTime(90.0))
    late.apply(warm("y", issued=10, start=11, end=12))
    step = late.step(11, [(11 * M + 10, "y", 1)])
    assert step.outcomes[0].cold is False
    assert step.outcomes[0].wait == pytest.approx(600 + 90 - 670)  # the rest of the load


def test_loaded_and_wasted_minutes_stop_at_the_last_minute() -> None:
    fleet = FleetState(FixedLoadTime(1.0))
    fleet.apply(warm("m", issued=0, start=1, end=100))
    for minute in range(1, 6):
        fleet.step(minute, [(minute * M, "m", 1)] if minute == 2 else [])
    totals = fleet.totals()
    assert (totals.loaded_minutes, totals.wasted_minutes, totals.cold_starts) == (5, 4, 0)


def test_commands_that_arrive_after_their_minute_count_as_late_but_on_event_time() -> None:
    fleet = FleetState(FixedLoadTime(1.0))
    fleet.step(0, [])
    fleet.step(1, [(M, "m", 1)])  # flagged cold: no lease known yet
    fleet.apply(warm("m", issued=0, start=1, end=3))  # decided in minute 0, arrived late
    assert fleet.late_commands == 1
    assert fleet.totals().cold_starts == 0  # event time: the lease covered minute 1
    assert fleet.flag_mismatches() == 1


def excerpt_trace(minutes: int) -> Trace:
    from tools.demo import SAMPLE, SAMPLE_T0

    return load_slice(str(SAMPLE), t0=SAMPLE_T0, minutes=minutes)


@pytest.mark.parametrize("policy", ["fixed:10", "fixed:3", "hybrid"])
def test_offline_fleet_equals_the_backtest(policy: str) -> None:
    trace = excerpt_trace(90)
    run = run_backtest(trace, [policy], progress=False).run(policy).score
    totals = run_local(trace, policy, load_times=FixedLoadTime(20.0))
    assert (totals.cold_starts, totals.requests) == (run.cold_starts, run.requests)
    assert (totals.loaded_minutes, totals.wasted_minutes) == (
        run.loaded_minutes,
        run.wasted_minutes,
    )


def test_partition_scoped_fixed_keepalive_is_the_same_fleet() -> None:
    trace = excerpt_trace(30)
    one = run_local(trace, "fixed:10")
    four = run_local(trace, "fixed:10", partitions=4)
    assert (one.cold_starts, one.wasted_minutes) == (four.cold_starts, four.wasted_minutes)


def test_local_fleet_keepalive_by_hand() -> None:
    fleet = LocalFleet(FixedKeepAlive(2), FixedLoadTime(5.0))
    for minute in range(0, 8):
        requests = [(minute * M, "m", 1)] if minute in (0, 2, 5) else []
        fleet.step(minute, requests)
    totals = fleet.finish(7)
    # loaded 1-2 (after 0), 3-4 (after 2), 6-7 (after 5): minute 5 is cold
    assert (totals.cold_starts, totals.loaded_minutes, totals.wasted_minutes) == (2, 6, 5)


def test_slice_is_on_the_epoch_minute_grid() -> None:
    trace = Trace("x", "csv", [(100.0, "a", 1), (130.0, "a", 1), (400.0, "b", 2)], 100.0, 5)
    sliced = slice_trace(trace)
    assert sliced.t0 == 60.0
    assert sliced.events == trace.events
    assert sliced.end_minute == math.ceil((trace.end_ts - 60.0) / 60.0) - 1
    assert slice_trace(trace, start=130.0, minutes=1).events == [(130.0, "a", 1)]


def test_lognormal_parameters_match_the_measured_load_times() -> None:
    assert math.exp(LOGNORMAL_MU) == pytest.approx(22.7, abs=0.05)
    assert math.exp(LOGNORMAL_MU + 2.3263 * LOGNORMAL_SIGMA) == pytest.approx(51.8, abs=0.1)


def test_prometheus_counters_are_summed_over_labels() -> None:
    text = (
        "# HELP warmcast_warmup_commands_total x\n"
        'warmcast_warmup_commands_total{action="warm"} 7.0\n'
        'warmcast_warmup_commands_total{action="release"} 2.0\n'
        'warmcast_warmup_commands_created{action="warm"} 1.7e9\n'
        'warmcast_message_processing_seconds_count{topic="usage"} 5.0\n'
        'warmcast_message_processing_seconds_count{topic="metrics"} 3.0\n'
    )
    assert prometheus_sum(text, "warmcast_warmup_commands_total") == 9.0
    assert prometheus_sum(text, *fleetsim.PROCESSED) == 5.0


def test_fleet_table_lines_up() -> None:
    t = FleetState(FixedLoadTime(1.0))
    t.step(0, [(0.0, "m", 12345)])
    lines = format_fleets([("warmcast worker (hybrid/1)", t.totals()), ("x", t.totals())])
    assert len({len(line) for line in lines.splitlines()}) == 1
