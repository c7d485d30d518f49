"""The decision-log scorer against a naive per-minute simulation of docs/evaluation.md."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import WarmupEngine
from engine.registry import make_policy
from engine.timebase import MinuteGrid
from tools.scoring import CommandTuple, Score, Usage, loaded_intervals, normalise, p75, score

T0 = 1_000.0


def naive(
    usage: dict[str, dict[int, int]],
    commands: list[CommandTuple],
    *,
    t0: float,
    end_minute: int,
    train_minutes: int,
) -> dict[str, float | int]:
    """Minute by minute: the latest command issued before minute m decides whether the
    model is loaded in m."""
    models = set(usage) | {c[1] for c in commands}
    cold = requests = loaded = warm = requested = 0
    percentages = []
    for model_id in models:
        log = [c for c in commands if c[1] == model_id]
        by_minute = usage.get(model_id, {})
        m_cold = m_requests = 0
        for m in range(train_minutes, end_minute + 1):
            state = False
            for issued_at, _, action, start, end in log:
                if math.floor((issued_at - t0) / 60) + 1 <= m:
                    s, e = math.floor((start - t0) / 60), math.floor((end - t0) / 60)
                    state = action == "warm" and s <= m < e
            n = by_minute.get(m, 0)
            loaded += state
            if n:
                requested += 1
                m_requests += n
                if state:
                    warm += 1
                else:
                    m_cold += 1
        if m_requests:
            percentages.append(100.0 * m_cold / m_requests)
        cold += m_cold
        requests += m_requests
    percentages.sort()
    return {
        "cold_starts": cold,
        "requests": requests,
        "loaded_minutes": loaded,
        "warm_minutes": warm,
        "requested_minutes": requested,
        "wasted_minutes": loaded - warm,
        "models": len(percentages),
        "p75_cold_pct": percentages[int(0.75 * len(percentages))] if percentages else 0.0,
    }


def fast(usage: dict[str, dict[int, int]], commands: list[CommandTuple], **kw: int) -> Score:
    return score(Usage.from_minutes(usage), commands, t0=T0, **kw)


def check(usage: dict[str, dict[int, int]], commands: list[CommandTuple], **kw: int) -> Score:
    got = fast(usage, commands, **kw)
    want = naive(usage, commands, t0=T0, **kw)
    assert {k: getattr(got, k) for k in want} == want
    if got.loaded_minutes:
        assert got.precision == got.warm_minutes / got.loaded_minutes
    if got.requested_minutes:
        assert got.recall == got.warm_minutes / got.requested_minutes
    return got


def at(minute: float) -> float:
    return T0 + 60.0 * minute


def warm(issued: int, start: int, end: int, model: str = "m") -> CommandTuple:
    return (at(issued), model, "warm", at(start), at(end))


def release(issued: int, model: str = "m") -> CommandTuple:
    return (at(issued), model, "release", at(issued), at(issued))


def test_keep_alive_by_hand() -> None:
    usage = {"m": {0: 3, 5: 1, 20: 2}}
    log = [warm(0, 1, 11), warm(5, 6, 16), warm(20, 21, 31)]
    s = check(usage, log, end_minute=25, train_minutes=0)
    assert (s.cold_starts, s.requests, s.loaded_minutes, s.wasted_minutes) == (2, 6, 20, 19)
    assert s.p75_cold_pct == pytest.approx(100 * 2 / 6)


def test_a_command_applies_from_the_next_minute() -> None:
    # issued at 4 with a lease from 0: minutes 0..4 stay as before (not loaded)
    s = check({"m": {3: 1, 5: 1}}, [warm(4, 0, 10)], end_minute=9, train_minutes=0)
    assert (s.cold_starts, s.loaded_minutes) == (1, 5)


def test_release_and_prewarm_gap() -> None:
    # hybrid-like: after 0, unloaded until 5, loaded 5..8; a release at 6 ends it
    log = [warm(0, 5, 9), release(6)]
    s = check({"m": {0: 1, 2: 1, 5: 1, 7: 1}}, log, end_minute=10, train_minutes=0)
    assert (s.cold_starts, s.warm_minutes, s.loaded_minutes) == (3, 1, 2)


def test_latest_command_of_a_minute_wins() -> None:
    log = [warm(2, 3, 30), warm(2, 3, 5)]
    s = check({"m": {2: 1, 6: 1}}, log, end_minute=10, train_minutes=0)
    assert (s.cold_starts, s.loaded_minutes) == (2, 2)


def test_training_prefix_and_end_of_trace() -> None:
    log = [warm(0, 1, 100), warm(30, 31, 1000)]
    s = check({"m": {0: 1, 30: 4, 45: 2}}, log, end_minute=50, train_minutes=20)
    # minutes 20..50 loaded except none: 31 loaded minutes, the lease past 50 is cut
    assert (s.requests, s.cold_starts, s.loaded_minutes) == (6, 0, 31)


def test_model_never_invoked_in_the_window_is_not_in_p75() -> None:
    usage = {"a": {1: 1}, "b": {12: 1}, "c": {13: 1}}
    s = check(usage, [warm(12, 13, 14, "c")], end_minute=15, train_minutes=10)
    assert (s.models, s.p75_cold_pct, s.cold_pct_overall) == (2, 100.0, 50.0)


def test_command_objects_and_dicts_score_alike() -> None:
    engine = WarmupEngine(make_policy("fixed:10"), grid=MinuteGrid(origin=T0))
    events = [(at(0), "m", 1), (at(3) + 59.0, "m", 2), (at(30), "m", 1)]
    commands = [c for ts, m, n in events for c in engine.observe(m, ts, n)]
    usage = Usage.from_events(events, t0=T0)
    a = score(usage, commands, t0=T0, end_minute=30)
    b = score(usage, [c.to_dict() for c in commands], t0=T0, end_minute=30)
    assert a == b
    assert (a.cold_starts, a.loaded_minutes) == (2, 13)


def test_out_of_order_commands_are_refused() -> None:
    with pytest.raises(ValueError, match="order"):
        loaded_intervals([warm(5, 6, 9), warm(2, 3, 4)], t0=T0, end_minute=10)


def test_normalise_and_p75() -> None:
    s = fast({"m": {0: 1}}, [warm(0, 1, 5)], end_minute=9)
    assert normalise(s, s).wasted_norm_pct == 100.0
    assert p75([]) == 0.0
    assert p75([5.0]) == 5.0


def _fixed_by_definition(usage: dict[str, dict[int, int]], k: int, end: int, train: int) -> int:
    """fixed:K straight from its definition: minute m is warm when the model was invoked
    in one of the K minutes before it."""
    cold = 0
    for by_minute in usage.values():
        for m in by_minute:
            if train <= m <= end and not any(m - d in by_minute for d in range(1, k + 1)):
                cold += 1
    return cold


@st.composite
def logs(draw: st.DrawFn) -> tuple[dict[str, dict[int, int]], list[CommandTuple], int, int]:
    end = draw(st.integers(0, 40))
    train = draw(st.integers(0, end + 2))
    models = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True))
    usage = {
        m: draw(st.dictionaries(st.integers(0, end), st.integers(1, 5), max_size=12))
        for m in models
    }
    commands: list[CommandTuple] = []
    issued = draw(st.integers(-3, 5))
    for _ in range(draw(st.integers(0, 25))):
        issued += draw(st.integers(0, 4))
        model = draw(st.sampled_from(models))
        if draw(st.booleans()) and draw(st.booleans()):
            commands.append(release(issued, model))
        else:
            start = issued + draw(st.integers(-2, 6))
            commands.append(warm(issued, start, start + draw(st.integers(-1, 30)), model))
    return usage, commands, end, train


@settings(max_examples=300, deadline=None)
@given(logs())
def test_matches_naive_simulation(
    case: tuple[dict[str, dict[int, int]], list[CommandTuple], int, int],
) -> None:
    usage, commands, end, train = case
    check(usage, commands, end_minute=end, train_minutes=train)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from("xyz"),
        st.dictionaries(st.integers(0, 80), st.integers(1, 3), min_size=1, max_size=20),
        min_size=1,
    ),
    st.sampled_from([1, 3, 10]),
    st.integers(0, 20),
)
def test_engine_fixed_keep_alive_matches_its_definition(
    usage: dict[str, dict[int, int]], k: int, train: int
) -> None:
    events = sorted((at(m) + 7.0, model, n) for model, bm in usage.items() for m, n in bm.items())
    engine = WarmupEngine(make_policy(f"fixed:{k}"), grid=MinuteGrid(origin=T0))
    commands = [c for ts, m, n in events for c in engine.observe(m, ts, n)]
    commands += engine.advance(at(81))
    s = score(Usage.from_events(events, t0=T0), commands, t0=T0, end_minute=80,
              train_minutes=train)  # fmt: skip
    assert s.cold_starts == _fixed_by_definition(usage, k, 80, train)
    log: list[CommandTuple] = [
        (c.issued_at, c.model_id, c.action, c.start, c.end) for c in commands
    ]
    naive_s = naive(usage, log, t0=T0, end_minute=80, train_minutes=train)
    assert s.loaded_minutes == naive_s["loaded_minutes"]
