"""The JSON Schema files accept exactly what a worker accepts.

Fuzzed usage and metric events, alone and in envelopes, are judged by a standard JSON
Schema validator (``jsonschema``, with the files in ``schemas/json/``) and by the worker's
own decoder (:meth:`streams.runtime.Runtime.decode`); the verdicts must agree. Left out of
the comparison, because no JSON Schema can say them (the files' descriptions say so): the
bound on event time relative to the worker's wall clock (the worker here runs with none,
and a test below shows that bound is the only difference), and the size limits set by the
worker's settings (the fuzzed messages stay far below them).
"""

from __future__ import annotations

import calendar
import itertools
import re
import time
from datetime import date, timedelta
from functools import cache
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas._types import MAX_EPOCH_SECONDS, RFC3339_PATTERN, text_to_epoch_seconds
from schemas.export import SCHEMA_DIR
from schemas.metric import MetricEvent
from schemas.usage import UsageEvent
from streams.runtime import Runtime
from streams.settings import WarmcastSettings

NOW = time.time()
FILES: dict[type[BaseModel], str] = {UsageEvent: "usage_message", MetricEvent: "metric_message"}


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = orjson.loads((SCHEMA_DIR / f"{name}.json").read_bytes())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@cache
def worker(max_future_skew: float = 0.0) -> Runtime:
    """The worker's decoding, with no bound on event time unless asked."""
    return Runtime(
        WarmcastSettings(max_future_skew_seconds=max_future_skew, max_past_skew_seconds=0)
    )


def verdicts(doc: Any, schema: type[BaseModel]) -> tuple[bool, bool, str]:
    """(schema accepts, worker accepts, why the worker refused) for one message."""
    raw = orjson.dumps(doc)
    on_the_wire = orjson.loads(raw)
    decoded = worker().decode(raw, schema, NOW)
    why = "; ".join(f"{e.reason}: {e.message}" for e in decoded.errors)
    return validator(FILES[schema]).is_valid(on_the_wire), not decoded.errors, why


# -- fuzzed values, dense around every rule's edge ----------------------------------------

EDGE_NUMBERS = [0, -0.0, 1, -1, -1e-9, 0.5, MAX_EPOCH_SECONDS, MAX_EPOCH_SECONDS + 1e-3]
numbers = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.integers(-(2**40), 2**40),
    st.floats(-1e12, 1e12, allow_nan=False),
    st.floats(MAX_EPOCH_SECONDS - 2, MAX_EPOCH_SECONDS + 2),
)
two = st.integers(0, 99).map(lambda n: f"{n:02d}")
ZONES = "|Z|z|+00:00|-00:00|+05:30|-23:59|+23:59|+24:00|-12:60|+0530|+05| Z|UTC|+5:30"
zones = st.sampled_from(ZONES.split("|"))
years = st.one_of(
    st.sampled_from([1969, 1970, 1971, 1972, 2000, 2023, 2024, 2100, 2196, 2198, 2199, 2200]),
    st.integers(0, 9999),
)
date_times = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone, around: (
        around[0] + f"{y:04d}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{zone}" + around[1]
    ),
    years,
    st.one_of(st.integers(1, 12).map(lambda n: f"{n:02d}"), two, st.sampled_from(["1", "001"])),
    st.one_of(st.integers(1, 31).map(lambda n: f"{n:02d}"), st.sampled_from(["00", "32", "1"])),
    st.sampled_from(["T", "T", "t", " ", "_", "", "TT"]),
    st.one_of(st.integers(0, 23).map(lambda n: f"{n:02d}"), st.sampled_from(["24", "7"])),
    st.one_of(st.integers(0, 59).map(lambda n: f"{n:02d}"), st.sampled_from(["60", "5"])),
    st.one_of(st.integers(0, 59).map(lambda n: f"{n:02d}"), st.sampled_from(["60", "61", ""])),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,12}", fullmatch=True), st.just(".")),
    zones,
    st.sampled_from([("", "")] * 6 + [(" ", ""), ("", " "), ("", "\n"), ("x", ""), ("", "x")]),
)
edge_days = st.sampled_from(
    [
        "1970-01-01T00:00:00",
        "1970-01-02T00:00:00",
        "2199-12-31T23:59:59.999",
        "2199-12-30T23:59:59",
        "2023-02-29T12:00:00",
        "2024-02-29T12:00:00",
        "2100-02-29T00:00:00",
        "2000-02-29T00:00:00",
        "2024-04-31T00:00:00",
    ]
).flatmap(lambda day: zones.map(lambda zone: day + zone))
texts = st.one_of(st.text(max_size=8), st.sampled_from(["", "60", " 60.5 ", "1e3", "nan"]))
timestamps = st.one_of(numbers, date_times, edge_days, texts, st.none(), st.booleans())
wrong_types = st.one_of(st.none(), st.booleans(), numbers, texts, st.just([]), st.just({}))
ids = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["", "m" * 256, "m" * 257, "é" * 256, "é" * 257]),
)
counts = st.one_of(
    st.integers(-2, 12),
    st.integers(9_999_990, 10_000_010),
    st.sampled_from([2.0, 2.5, 1e7, 1e7 + 1, 0.0, True, False, "5"]),
)
flags = st.one_of(st.booleans(), st.none(), st.sampled_from([0, 1, "true", "yes"]))
labels = st.one_of(st.none(), st.text(max_size=4), st.sampled_from(["n" * 256, "n" * 257, 7]))
good_ts = st.one_of(
    st.floats(0, MAX_EPOCH_SECONDS),
    st.integers(0, int(MAX_EPOCH_SECONDS)),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    edge_days,
)
good_labels = st.one_of(st.none(), st.text(max_size=8))
#: Per field: values of the right kind (most of them valid), and edge values of any kind.
USAGE_FIELDS = {
    "model_id": (st.text(min_size=1, max_size=12), st.one_of(ids, wrong_types)),
    "ts": (good_ts, timestamps),
    "count": (st.integers(1, 10_000_000), counts),
    "cold_start": (st.none() | st.booleans(), flags),
    "error": (st.none() | st.booleans(), flags),
    "latency": (st.none() | st.floats(0, 1e6), st.one_of(numbers, st.sampled_from(["0.5", True]))),
    "tenant": (good_labels, labels),
    "user": (good_labels, labels),
    "node": (good_labels, labels),
    "extra": (wrong_types, wrong_types),
}
METRIC_FIELDS = {
    "model_id": (st.text(min_size=1, max_size=12), st.one_of(ids, wrong_types)),
    "node_id": (st.none() | st.text(min_size=1, max_size=12), st.one_of(ids, wrong_types)),
    "ts": (good_ts, timestamps),
    "name": (st.text(min_size=1, max_size=12), st.one_of(ids, wrong_types)),
    "value": (
        st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**62), 2**62),
        st.one_of(numbers, st.none(), st.sampled_from(["1.5", True, "-inf"])),
    ),
    "unit": (st.text(max_size=8), labels),
    "extra": (wrong_types, wrong_types),
}


def events(fields: dict[str, Any], required: tuple[str, ...]) -> Any:
    """An event of right values, then at times one field given an edge value or dropped
    (and at times more than one), so that every rule is met and broken alike."""
    right = st.fixed_dictionaries(
        {k: good for k, (good, _) in fields.items() if k in required},
        optional={k: good for k, (good, _) in fields.items() if k not in required},
    )

    @st.composite
    def event(draw: st.DrawFn) -> dict[str, Any]:
        doc = draw(right)
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
            key = draw(st.sampled_from(sorted(fields)))
            if draw(st.integers(0, 5)) == 0:
                doc.pop(key, None)
            else:
                doc[key] = draw(fields[key][1])
        return doc

    return event()


def messages(event: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A single event, an array of them, ``{"events": [...]}`` (with a ``model_id`` at
    times, which makes it a single event), or something that is not a message at all."""
    many = st.lists(event, max_size=4)
    return st.one_of(
        event,
        event,
        event,
        many,
        st.fixed_dictionaries({"events": many}, optional={"model_id": ids, "other": texts}),
        st.fixed_dictionaries({"events": wrong_types}),
        wrong_types,
    )


MESSAGES = {
    UsageEvent: messages(events(USAGE_FIELDS, ("model_id", "ts"))),
    MetricEvent: messages(events(METRIC_FIELDS, ("model_id", "ts", "name", "value"))),
}
EXAMPLES = 1500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("schema", [UsageEvent, MetricEvent], ids=lambda s: s.__name__)
def test_the_schema_files_and_the_worker_agree_on_fuzzed_messages(
    schema: type[BaseModel],
) -> None:
    seen = {True: 0, False: 0}

    @FUZZ
    @given(MESSAGES[schema])
    def check(doc: Any) -> None:
        by_schema, by_worker, why = verdicts(doc, schema)
        assert by_schema == by_worker, (
            f"schema {'accepts' if by_schema else 'refuses'}, worker "
            f"{'accepts' if by_worker else 'refuses'} {doc!r}: {why}"
        )
        seen[by_worker] += 1

    check()
    # About a quarter is valid: both sides of the rules are tried, in every run.
    assert min(seen.values()) > EXAMPLES // 10, seen


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {
                "model_id": "llama-8b",
                "ts": "2024-11-15T00:00:03Z",
                "count": 1,
                "cold_start": False,
                "latency": 0.21,
            },
            True,
        ),  # the README's example
        ({"model_id": "m", "ts": -5}, False),
        ({"model_id": "m", "ts": "2024-11-15T00:00:03Z\n"}, False),
        ({"model_id": "m", "ts": "1970-01-01T00:30:00+01:00"}, False),
        ({"model_id": "m", "ts": "2024-11-15 00:00:03"}, True),
        ({"model_id": "m", "ts": "60"}, False),
        ({"model_id": "m", "ts": 60, "count": 2.0}, True),
        ({"model_id": "m", "ts": 60, "count": "2"}, False),
        ({"model_id": "m", "ts": 60, "cold_start": 1}, False),
        ([{"model_id": "m", "ts": 60}, {"model_id": "n", "ts": 61}], True),
        ({"events": [{"model_id": "m", "ts": 60}, {"model_id": "", "ts": 1}]}, False),
        ({"events": 3}, False),
    ],
)
def test_known_edges(doc: Any, expected: bool) -> None:
    by_schema, by_worker, why = verdicts(doc, UsageEvent)
    assert (by_schema, by_worker) == (expected, expected), why


def test_a_metric_event_needs_model_id_or_node_id_in_both() -> None:
    base = {"ts": 60, "name": "load_time_seconds", "value": 3}
    cases: list[tuple[dict[str, Any], bool]] = [
        ({}, False),
        ({"model_id": None, "node_id": None}, False),
        ({"node_id": "n"}, True),
        ({"model_id": "m", "node_id": None}, True),
    ]
    for subject, expected in cases:
        assert verdicts({**base, **subject}, MetricEvent)[:2] == (expected, expected), subject


@FUZZ
@given(MESSAGES[UsageEvent])
def test_the_wall_clock_bound_is_the_one_rule_left_out(doc: Any) -> None:
    """With the default bound on future event time, the worker refuses what the schema
    accepts only for that bound (``timestamp_skew``), never the other way round."""
    raw = orjson.dumps(doc)
    decoded = worker(max_future_skew=3600.0).decode(raw, UsageEvent, NOW)
    unbounded = worker().decode(raw, UsageEvent, NOW)
    skewed = [e for e in decoded.errors if e.reason == "timestamp_skew"]
    assert len(decoded.errors) - len(skewed) == len(unbounded.errors)
    for error in skewed:
        ts = orjson.loads(error.raw)["ts"] if error.raw else None
        assert ts is None or text_or_number(ts) > NOW + 3600.0


def schema_file_pattern() -> str:
    """The date-time pattern of ``ts`` as the usage event's schema file has it."""
    doc = orjson.loads((SCHEMA_DIR / "usage_event.json").read_bytes())
    (pattern,) = [b["pattern"] for b in doc["properties"]["ts"]["anyOf"] if "pattern" in b]
    assert pattern == RFC3339_PATTERN
    return str(pattern)


def text_or_number(ts: Any) -> float:
    return text_to_epoch_seconds(ts) if isinstance(ts, str) else float(ts)


def test_the_date_time_pattern_against_the_calendar() -> None:
    """Every day from 1969 to 2200, with a zone of each kind: accepted exactly when it is
    a real date from 1970-01-01 to 2199-12-31 (the first and last day in UTC only), and
    then read as the epoch seconds the calendar says."""
    day, last = date(1969, 12, 30), date(2200, 1, 2)
    offsets = {"Z": 0, "": 0, "+23:59": -86340, "-23:59": 86340}
    pattern = re.compile(schema_file_pattern())  # as a JSON Schema validator applies it
    checked = 0
    while day <= last:
        for zone, shift in offsets.items():
            text = f"{day.isoformat()}T12:34:56.5{zone}"
            first_or_last = day in (date(1970, 1, 1), date(2199, 12, 31))
            expected = date(1970, 1, 1) <= day <= date(2199, 12, 31) and (
                shift == 0 or not first_or_last
            )
            assert (pattern.search(text) is not None) == expected, text
            if expected:
                seconds = calendar.timegm(day.timetuple()) + 45296.5 + shift
                assert text_to_epoch_seconds(text) == seconds
                assert 0 <= seconds <= MAX_EPOCH_SECONDS
            checked += 1
        day += timedelta(days=1)
    assert checked > 80_000
    assert validator("usage_message").is_valid({"model_id": "m", "ts": "1970-01-02T00:00:00Z"})
    impossible = [f"{y}-02-29T00:00:00Z" for y in (1971, 2023, 2100, 2199)]
    impossible += ["2024-04-31T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-01T24:00:00Z"]
    assert not any(
        itertools.starmap(
            lambda t: validator("usage_message").is_valid({"model_id": "m", "ts": t}),
            ((t,) for t in impossible),
        )
    )
    assert RFC3339_PATTERN.startswith("^") and "\\d" not in RFC3339_PATTERN
