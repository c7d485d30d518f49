"""Maintenance windows: the spec parser, cron occurrences, and the rules an engine follows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.core import WarmupEngine
from engine.lease import Command
from engine.maintenance import (
    MaintenanceGate,
    MaintenanceSchedule,
    WindowSpecError,
    parse_window,
    parse_windows,
)
from engine.policies import FixedKeepAlive


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- the spec -----------------------------------------------------------------------------


def test_a_cron_window_and_its_keys() -> None:
    w = parse_window("cron=30 2 * * SAT,SUN,duration=1h30m,models=llama-*,cap=3,lead=5m,id=wk")
    assert (w.id, w.models, w.cap, w.mode, w.lead, w.duration) == (
        "wk",
        "llama-*",
        3,
        "cap=3",
        300.0,
        5400.0,
    )
    assert w.cron is not None and w.cron.weekdays == {0, 6} and w.cron.minutes == {30}


def test_explicit_times_in_several_forms() -> None:
    a = parse_window("from=2026-12-03T02:00Z,until=2026-12-03T03:00Z")
    b = parse_window("from=2026-12-03T03:00+01:00,until=2026-12-03T03:00")
    c = parse_window(f"from={utc('2026-12-03T02:00')},duration=60m")
    assert a.start == b.start == c.start == utc("2026-12-03T02:00")
    assert a.until == b.until == c.until == utc("2026-12-03T03:00")


def test_the_id_is_stable_and_set_by_the_spec() -> None:
    spec = "cron=0 2 * * *,duration=1h"
    assert parse_window(spec).id == parse_window(spec).id
    assert parse_window(spec).id != parse_window("cron=0 3 * * *,duration=1h").id


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "an empty window spec"),
        ("cron=0 2 * * *", "a cron window needs duration="),
        ("duration=1h", "a window needs cron= and duration=, or from= and until="),
        ("cron=0 2 * *,duration=1h", "cron: 5 fields"),
        ("cron=0 24 * * *,duration=1h", "cron hour: 24 is outside 0-23"),
        ("cron=0 2 * FOO *,duration=1h", "cron month: 'FOO' is not a number or a name"),
        ("cron=0 2 * * 5-1,duration=1h", "cron day of week: range '5-1' runs backwards"),
        ("cron=*/0 2 * * *,duration=1h", "cron minute: step '0' is not a positive number"),
        ("cron=0 2 * * *,duration=soon", "duration='soon': e.g. 90m"),
        ("cron=0 2 * * *,duration=0m", "must be positive"),
        ("cron=0 2 * * *,duration=40d", "at most 31 days"),
        ("from=yesterday,until=2026-12-03T03:00Z", "from='yesterday': an ISO 8601 time"),
        ("from=2026-12-03T02:00Z", "from= needs until= or duration="),
        ("from=100,until=50", "until= must be after from="),
        ("cron=0 2 * * *,duration=1h,from=0", "not both"),
        ("cron=0 2 * * *,duration=1h,mode=off", "mode='off': pause or cap"),
        ("cron=0 2 * * *,duration=1h,cap=lots", "cap='lots': a whole number"),
        ("cron=0 2 * * *,duration=1h,mode=pause,cap=2", "mode=pause takes no cap="),
        ("cron=0 2 * * *,duration=1h,colour=red", "unknown key 'colour'"),
        ("cron=0 2 * * *,duration=1h,duration=2h", "duration= is given twice"),
        ("cron=0 2 * * *,duration=1h,id=a/b", "id='a/b': letters, digits"),
        ("pause", "'pause' is not key=value"),
    ],
)
def test_parse_errors_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(WindowSpecError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_window(spec)


def test_several_windows_name_the_bad_one() -> None:
    with pytest.raises(WindowSpecError, match="window 2: a cron window needs duration="):
        parse_windows("from=0,until=60;cron=0 2 * * *")
    assert parse_windows("  ") == []


# -- cron occurrences ---------------------------------------------------------------------


def naive_occurrence(spec: str, ts: float) -> tuple[float, float] | None:
    """The occurrence in force at ``ts``, minute by minute backwards (the reference)."""
    w = parse_window(spec)
    assert w.cron is not None
    minute = int(ts // 60) * 60
    latest = None
    t = minute
    while t > ts - w.duration:
        d = datetime.fromtimestamp(t, UTC)
        day = d.replace(hour=0, minute=0)
        named = d.hour in w.cron.hours and d.minute in w.cron.minutes
        if named and w.cron.starts_of_day(int(day.timestamp())):
            latest = t
            break
        t -= 60
    return None if latest is None else (float(latest), latest + w.duration)


@pytest.mark.parametrize(
    "spec",
    [
        "cron=0 2 * * SUN,duration=90m",
        "cron=*/20 * * * *,duration=7m",
        "cron=45 23 * * FRI,duration=3h",  # over midnight
        "cron=0 0 1,15 * MON,duration=1d",  # day of month or day of week
        "cron=10-20/5 4 * JAN-MAR,DEC *,duration=30m",
    ],
)
def test_cron_occurrences_match_a_minute_by_minute_reference(spec: str) -> None:
    w = parse_window(spec)
    start = utc("2026-11-28T00:00")
    for step in range(0, 14 * 86400, 317 * 60 + 13):  # two weeks at odd offsets
        ts = start + step
        assert w.occurrence(ts) == naive_occurrence(spec, ts), (spec, ts)


def test_day_of_month_or_day_of_week_as_cron_does() -> None:
    w = parse_window("cron=0 12 13 * FRI,duration=1h")
    assert w.occurrence(utc("2026-12-13T12:30")) is not None  # the 13th, a Sunday
    assert w.occurrence(utc("2026-12-04T12:30")) is not None  # a Friday
    assert w.occurrence(utc("2026-12-05T12:30")) is None


def test_occurrences_over_a_span() -> None:
    w = parse_window("cron=0 2 * * SUN,duration=90m")
    found = list(w.occurrences(utc("2026-12-01T00:00"), utc("2026-12-31T00:00")))
    assert [datetime.fromtimestamp(s, UTC).day for s, _ in found] == [6, 13, 20, 27]
    assert all(e - s == 5400 for s, e in found)


# -- the rules ----------------------------------------------------------------------------

WINDOW_FROM, WINDOW_UNTIL = 60 * 60.0, 90 * 60.0  # minutes 60..89


def engine_with(spec: str) -> WarmupEngine:
    engine = WarmupEngine(FixedKeepAlive(10))
    engine.maintenance = MaintenanceGate(MaintenanceSchedule(parse_windows(spec)), engine.grid)
    return engine


def run(engine: WarmupEngine, requests: list[tuple[str, int]], until: int) -> list[Command]:
    out: list[Command] = []
    for model_id, minute in requests:
        out += engine.observe(model_id, minute * 60.0 + 1)
    return out + engine.advance(until * 60.0)


def warm_starts(commands: list[Command]) -> list[tuple[str, int, int]]:
    return [
        (c.model_id, int(c.issued_at // 60), int(c.start // 60))
        for c in commands
        if c.action == "warm"
    ]


def test_pause_holds_warm_ups_and_warms_models_expected_after_the_end() -> None:
    engine = engine_with(f"from={WINDOW_FROM},until={WINDOW_UNTIL},mode=pause")
    # "a" is used every 5 minutes through the window; "b" once inside it, early
    requests = sorted([("a", m) for m in range(50, 110, 5)] + [("b", 65)], key=lambda r: r[1])
    commands = run(engine, requests, 120)
    starts = warm_starts(commands)
    inside = [s for s in starts if 60 <= s[2] < 88]
    assert inside == [], inside  # nothing starts in the window but its last two minutes
    assert ("a", 88, 88) in starts  # held, then started two minutes ahead of the end
    assert not any(m == "b" for m, _, _ in starts)  # its lease ended inside: never started
    assert engine.stats.maintenance_held >= 6 and engine.stats.maintenance_started == 1
    assert engine.maintenance is not None and engine.maintenance.held_dropped >= 1


def test_release_commands_still_go_out() -> None:
    engine = engine_with(f"from={WINDOW_FROM},until={WINDOW_UNTIL}")
    run(engine, [("a", 55)], 58)
    released = engine.release_all("drain for maintenance")
    engine.observe("a", 70 * 60.0)
    assert [(c.model_id, c.action) for c in released] == [("a", "release")]


def test_a_window_of_a_pool_leaves_other_models_alone() -> None:
    engine = engine_with(f"from={WINDOW_FROM},until={WINDOW_UNTIL},models=llama-*")
    starts = warm_starts(run(engine, [("llama-7b", 70), ("sdxl", 70)], 75))
    assert starts == [("sdxl", 70, 71)]


def test_cap_starts_at_most_n_per_minute_and_the_rest_later() -> None:
    engine = engine_with(f"from={WINDOW_FROM},until={WINDOW_UNTIL},cap=2")
    models = [f"m{i}" for i in range(5)]
    starts = warm_starts(run(engine, [(m, 70) for m in models], 80))
    per_minute: dict[int, int] = {}
    for _, _, start in starts:
        per_minute[start] = per_minute.get(start, 0) + 1
    assert sorted({m for m, _, _ in starts}) == models  # all of them, in time
    assert max(per_minute.values()) == 2 and sorted(per_minute) == [71, 72, 73]


def test_a_cap_counts_warm_ups_not_renewals_of_a_loaded_model() -> None:
    engine = engine_with(f"from={WINDOW_FROM},until={WINDOW_UNTIL},cap=1")
    kept = [("a", m) for m in range(55, 75)]  # warm before the window, used every minute
    new = [("b", 70), ("c", 70), ("d", 70)]
    starts = warm_starts(run(engine, sorted(kept + new, key=lambda r: r[1]), 80))
    renewals = [start for m, _, start in starts if m == "a" and start >= 60]
    assert renewals == list(range(60, 76))  # none held: the model stays loaded
    loads = sorted((start, m) for m, _, start in starts if m != "a")
    assert loads == [(71, "b"), (72, "c"), (73, "d")]  # one a minute


def test_the_lead_comes_from_the_window_or_the_predicted_load_time() -> None:
    engine = engine_with(f"from={WINDOW_FROM},until={WINDOW_UNTIL},lead=6m")
    assert ("a", 84, 84) in warm_starts(run(engine, [("a", 80)], 95))

    class Slow:
        """fixed:10 with a load time it predicts (composed: the compiled policy is final)."""

        def __init__(self) -> None:
            self.inner = FixedKeepAlive(10)
            self.name, self.version = "slow", "slow/1"
            self.on_request = self.inner.on_request
            self.on_minute_closed = self.inner.on_minute_closed
            self.next_review = self.inner.next_review
            self.forget = self.inner.forget

        def predicted_load_seconds(self, model_id: str) -> float:
            return 250.0  # five minutes ahead (whole minutes, rounded up)

    slow = WarmupEngine(Slow())
    slow.maintenance = MaintenanceGate(
        MaintenanceSchedule(parse_windows(f"from={WINDOW_FROM},until={WINDOW_UNTIL}")), slow.grid
    )
    assert ("a", 85, 85) in warm_starts(run(slow, [("a", 80)], 95))


def test_a_cancelled_window_lets_held_leases_start() -> None:
    engine = engine_with(f"from={WINDOW_FROM},until={WINDOW_UNTIL},id=w")
    assert warm_starts(run(engine, [("a", 70)], 72)) == []
    assert engine.maintenance is not None and engine.maintenance.schedule.cancel("w")
    assert warm_starts(engine.advance(74 * 60.0)) == [("a", 73, 73)]


def test_no_window_changes_nothing() -> None:
    requests = [(f"m{i % 7}", i) for i in range(0, 300, 3)]
    plain = run(WarmupEngine(FixedKeepAlive(10)), requests, 320)
    gated = run(engine_with("from=0,until=60"), requests, 320)  # over before the trace
    assert gated == plain
