"""WarmupEngine: the event-time loop every policy runs in, against naive references."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import WarmupEngine
from engine.lease import Lease
from engine.policies import FixedKeepAlive, HybridHistogram
from engine.timebase import MinuteGrid
from schemas.warmup import WarmupCommand

events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 36_000), st.integers(1, 5)),
    max_size=200,
).map(lambda xs: sorted(xs, key=lambda e: e[1]))


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 30))
def test_fixed_keepalive_matches_a_naive_reference(stream, keepalive):  # type: ignore[no-untyped-def]
    engine = WarmupEngine(FixedKeepAlive(keepalive))
    commands = [c for e in stream for c in engine.observe(*e)]
    if stream:  # the end of the stream: an event after a gap is decided by now
        commands += engine.advance(stream[-1][1])
    got = [(c.model_id, c.issued_at, c.start, c.end) for c in commands]
    seen: set[tuple[str, int]] = set()
    expected = []
    for model_id, ts, _ in stream:
        minute = int(ts // 60)
        if (model_id, minute) not in seen:
            seen.add((model_id, minute))
            start = 60.0 * (minute + 1)
            expected.append((model_id, 60.0 * minute, start, start + 60.0 * keepalive))
    assert got == expected
    assert engine.stats.requests == sum(e[2] for e in stream)
    assert engine.stats.commands == len(expected)


def test_grid_origin_moves_minute_boundaries() -> None:
    engine = WarmupEngine(FixedKeepAlive(5), grid=MinuteGrid(origin=30.0))
    (command,) = engine.observe("m", 95.0)  # minute 1 of a grid starting at 30 s
    assert (command.issued_at, command.start, command.end) == (90.0, 150.0, 450.0)


def test_late_events_count_in_the_open_minute() -> None:
    engine = WarmupEngine(FixedKeepAlive(10))
    engine.observe("a", 600.0)
    assert engine.observe("a", 500.0) == []  # late, and "a" already decided this minute
    (late,) = engine.observe("b", 500.0)  # late: decided as if it came in the open minute
    assert late.issued_at == 600.0
    assert engine.stats.late_events == 2


def test_commands_are_idempotent_and_valid_contracts() -> None:
    first = WarmupEngine(HybridHistogram())
    second = WarmupEngine(HybridHistogram())
    stream = [("m", 60.0 * t) for t in (0, 3, 4, 9, 10, 15)]
    a = [c for e in stream for c in first.observe(*e)]
    b = [c for e in stream for c in second.observe(*e)]
    assert [c.command_id for c in a] == [c.command_id for c in b]
    for command in a:
        assert WarmupCommand.model_validate(command.to_dict()).command_id == command.command_id


class Timer:
    """A policy that asks to be woken at fixed minutes and pre-warms a model then."""

    name = "timer"
    version = "timer/1"

    def __init__(self, wake: list[int]) -> None:
        self.wake = sorted(wake)
        self.closed: list[tuple[int, dict[str, int]]] = []
        self.forgotten: list[str] = []

    def on_request(self, model_id: str, minute: int) -> Lease | None:
        return Lease.release(minute + 1)

    def on_minute_closed(
        self, minute: int, counts: Mapping[str, int]
    ) -> Iterable[tuple[str, Lease]]:
        self.closed.append((minute, dict(counts)))
        due = [w for w in self.wake if w <= minute]
        self.wake = [w for w in self.wake if w > minute]
        return [("idle", Lease("warm", w + 1, w + 3)) for w in due]

    def next_review(self) -> int | None:
        return self.wake[0] if self.wake else None

    def forget(self, model_id: str) -> None:
        self.forgotten.append(model_id)


def test_reviews_run_at_their_minute_with_no_requests() -> None:
    policy = Timer(wake=[5, 7, 50])
    engine = WarmupEngine(policy)
    assert engine.observe("m", 0.0) == []  # release with no lease before: nothing to say
    assert engine.observe("m", 60.0 * 20) == []  # 20 minutes ahead: until confirmed
    commands = engine.observe("n", 60.0 * 20)  # closes minute 0, wakes at 5 and 7
    assert [(c.model_id, c.issued_at, c.start, c.end) for c in commands] == [
        ("idle", 300.0, 360.0, 480.0),
        ("idle", 420.0, 480.0, 600.0),
    ]
    assert [m for m, _ in policy.closed] == [0, 5, 7]
    assert policy.closed[0] == (0, {"m": 1})
    assert [c.issued_at for c in engine.advance(60.0 * 60)] == [3000.0]


def test_idle_models_are_evicted_after_their_ttl() -> None:
    policy = Timer(wake=[])
    engine = WarmupEngine(FixedKeepAlive(10), idle_ttl_minutes=120)
    engine.policy = policy
    engine.observe("old", 0.0)
    engine.observe("new", 60.0 * 150)
    engine.advance(60.0 * 200)
    assert "old" not in engine.last_seen and "new" in engine.last_seen
    assert policy.forgotten == ["old"]
    assert engine.stats.evicted_models == 1


def test_evicted_models_are_reported_once() -> None:
    assert WarmupEngine(FixedKeepAlive(10), max_models=1).drain_evicted() == []
    engine = WarmupEngine(FixedKeepAlive(10), max_models=2, report_evictions=True)
    for i, model_id in enumerate(["a", "b", "c", "d"]):
        engine.observe(model_id, 60.0 * i)
    assert engine.drain_evicted() == ["a", "b"]
    assert engine.drain_evicted() == []
    assert sorted(engine.last_seen) == ["c", "d"]


def test_metric_events_reach_a_policy_that_learns_them() -> None:
    from engine.warmcast import WarmcastPolicy

    policy = WarmcastPolicy()
    engine = WarmupEngine(policy)
    before = policy.performance.predict_one("m")
    for _ in range(50):
        engine.observe_metric("m", "load_time_seconds", 170.0, 0.0)
    engine.observe_metric("m", "latency_seconds", 0.2, 0.0)  # not learned, not an error
    assert engine.stats.metric_events == 51
    assert policy.performance.predict_one("m") > before
