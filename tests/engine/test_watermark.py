"""Event time that one outlier cannot move, against the plain newest-event clock."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import WarmupEngine
from engine.lease import Command
from engine.policies import FixedKeepAlive, HybridHistogram, Policy
from engine.warmcast import WarmcastPolicy

NOW = 1_700_000_040.0  # the start of a minute
#: A tolerance no input reaches: the engine is then the plain newest-event clock.
PLAIN = 10**9


def run(engine: WarmupEngine, events: list[tuple[str, float, int]]) -> list[Command]:
    """Every command of ``events``, then of the end of the stream (as a backtest ends)."""
    out = [c for e in events for c in engine.observe(*e)]
    if events:
        out += engine.advance(max(ts for _, ts, _ in events))
    return out


def test_one_future_event_does_not_shift_the_other_models() -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    engine.observe("a", NOW)
    assert engine.observe("outlier", NOW + 3500) == []  # passes the skew bound, held
    commands = engine.observe("b", NOW + 11)  # the next normal event, of another model
    starts = {c.model_id: c.start for c in commands}
    assert starts == {"outlier": NOW + 60, "b": NOW + 60}  # next minute, not an hour on
    assert engine.watermark == NOW and engine.newest == NOW + 11
    assert engine.stats.future_events == 1
    assert (engine.stats.events, engine.stats.requests) == (3, 3)  # the outlier is counted
    # the plain clock: "b" would have been late, its lease an hour ahead
    plain = WarmupEngine(FixedKeepAlive(10), tolerance_minutes=PLAIN)
    plain.observe("a", NOW)
    plain.observe("outlier", NOW + 3500)
    (late,) = plain.observe("b", NOW + 11)
    assert late.start - NOW == 3540.0


def test_repeats_of_an_outlier_do_not_confirm_it() -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    engine.observe("a", NOW)
    for _ in range(3):  # a producer's retries, or an envelope sent twice
        assert engine.observe("outlier", NOW + 3000, count=2) == []
    commands = engine.observe("a", NOW + 70)
    assert [(c.model_id, c.start) for c in commands] == [("outlier", NOW + 60), ("a", NOW + 120)]
    assert engine.stats.future_events == 3 and engine.stats.requests == 8


def test_outliers_that_contradict_each_other_are_both_outliers() -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    engine.observe("a", NOW)
    engine.observe("x", NOW + 3500)
    engine.observe("y", NOW + 1200)  # far before "x", and far ahead of the clock itself
    engine.observe("a", NOW + 60)
    assert engine.stats.future_events == 2 and engine.watermark == NOW + 60
    assert {m: lease.start for m, lease in engine.leases.items()} == {
        "a": NOW // 60 + 2,
        "x": NOW // 60 + 1,
        "y": NOW // 60 + 1,
    }


def test_a_gap_in_a_sparse_partition_is_confirmed_by_the_next_event() -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    got: list[tuple[str, float]] = []
    for hour in range(5):  # one model, one request every two hours
        got += [(c.model_id, c.start) for c in engine.observe("m", NOW + 7200 * hour)]
    got += [(c.model_id, c.start) for c in engine.advance(NOW + 7200 * 4)]
    assert got == [("m", NOW + 7200 * h + 60) for h in range(5)]
    assert engine.stats.future_events == 0 and engine.newest == NOW + 7200 * 4


def test_advance_and_confirm_take_a_held_event_at_its_own_time() -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    engine.observe("a", NOW)
    engine.observe("b", NOW + 3600)
    assert engine.advance(NOW + 600) == []  # the clock is far behind it: still held
    assert engine.held_time == NOW + 3600 and engine.watermark == NOW + 600
    (command,) = engine.advance(NOW + 3600 - 240)  # within the tolerance of it
    assert command.start == NOW + 3660 and engine.held_time is None
    engine.observe("c", NOW + 9000)
    (command,) = engine.confirm()
    assert (command.model_id, command.start) == ("c", NOW + 9060)
    assert engine.confirm() == []


def test_a_held_event_survives_a_checkpoint() -> None:
    import pickle

    engine = WarmupEngine(FixedKeepAlive(10))
    engine.observe("a", NOW)
    engine.observe("b", NOW + 3600)
    restored = pickle.loads(pickle.dumps(engine))
    assert restored.held_time == NOW + 3600
    assert [c.model_id for c in restored.observe("c", NOW + 3620)] == ["b", "c"]


def test_a_state_saved_without_the_held_event_restores_with_none() -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    engine.observe("a", NOW)
    state = engine.__getstate__()
    for name in ("tolerance_minutes", "newest", "_held", "_untracked"):
        del state[name]
    restored = WarmupEngine(FixedKeepAlive(10))
    restored.__setstate__(state)
    assert restored.held_time is None and restored.tolerance_minutes == 5
    assert restored.observe("b", NOW + 3600) == []  # the rule holds for it too


POLICIES: dict[str, Callable[[], Policy]] = {
    "fixed:10": lambda: FixedKeepAlive(10),
    "hybrid": HybridHistogram,
}


def sorted_events(max_gap: float) -> st.SearchStrategy[list[tuple[str, float, int]]]:
    """Events of a few models in time order, gaps of up to ``max_gap`` seconds."""
    step = st.tuples(st.sampled_from("abcdef"), st.floats(0, max_gap), st.integers(1, 4))

    def accumulate(steps: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
        ts, out = NOW, []
        for model_id, gap, count in steps:
            ts += gap
            out.append((model_id, ts, count))
        return out

    return st.lists(step, max_size=150).map(accumulate)


@settings(max_examples=150, deadline=None)
@given(sorted_events(max_gap=4 * 3600), st.sampled_from(sorted(POLICIES)))
def test_in_order_input_takes_the_same_decisions(events, policy):  # type: ignore[no-untyped-def]
    robust = run(WarmupEngine(POLICIES[policy]()), events)
    plain = run(WarmupEngine(POLICIES[policy](), tolerance_minutes=PLAIN), events)
    assert robust == plain


@settings(max_examples=150, deadline=None)
@given(
    sorted_events(max_gap=1800),
    st.lists(st.floats(0, 4 * 60 - 1), min_size=150, max_size=150),
    st.sampled_from(sorted(POLICIES)),
)
def test_input_out_of_order_within_the_tolerance_takes_the_same_decisions(  # type: ignore[no-untyped-def]
    events, jitter, policy
):
    shuffled = [(m, ts - j, n) for (m, ts, n), j in zip(events, jitter, strict=False)]
    robust_engine = WarmupEngine(POLICIES[policy]())
    robust = run(robust_engine, shuffled)
    plain = run(WarmupEngine(POLICIES[policy](), tolerance_minutes=PLAIN), shuffled)
    assert robust == plain
    assert robust_engine.stats.future_events == 0


def test_the_learning_policy_takes_the_same_decisions_on_in_order_input() -> None:
    events = []
    for i in range(300):  # a periodic model, a bursty one, and gaps of hours between runs
        day, k = divmod(i, 100)
        events.append(("timer", NOW + day * 86_400 + 600 * k, 1))
        if k % 7 == 0:
            events.append(("burst", NOW + day * 86_400 + 600 * k + 30, 3))
    events.sort(key=lambda e: e[1])

    def policy() -> WarmcastPolicy:
        return WarmcastPolicy(min_samples=50)

    robust = run(WarmupEngine(policy()), events)
    plain = run(WarmupEngine(policy(), tolerance_minutes=PLAIN), events)
    assert robust == plain and len(robust) > 100
