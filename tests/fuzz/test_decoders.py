"""Property-based fuzzing of every decoder: whatever arrives, decoding returns, and every
item of a message ends as an event or as an error that can be dead-lettered.

11,700 generated inputs per run (see ``BUDGET``; the mutation test decodes ten mutants
per example); ``WARMCAST_FUZZ_SCALE=20`` runs twenty times as many, for a long run.
Decoding is pure, so no broker is involved.
"""

from __future__ import annotations

import json
import math
import os
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas._types import MAX_EPOCH_SECONDS
from schemas.envelope import Decoded, decode, reject_skewed
from schemas.metric import MetricEvent
from schemas.usage import UsageEvent

SCALE = float(os.environ.get("WARMCAST_FUZZ_SCALE", "1"))
#: Generated inputs per test in a normal run.
BUDGET = {
    "bytes": 3000,
    "single": 1500,
    "envelopes": 1000,
    "skew": 1000,
    "nesting": 200,
    "mutants": 500,
}
MUTANTS_PER_EXAMPLE = 10
REASONS = {"malformed_json", "schema_violation", "oversize", "bad_envelope", "timestamp_skew"}
SCHEMAS: list[type[BaseModel]] = [UsageEvent, MetricEvent]
MAX_BYTES = 64 * 1024
MAX_EVENTS = 12


def fuzz(kind: str) -> Any:
    return settings(
        max_examples=max(1, int(BUDGET[kind] * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, MAX_EPOCH_SECONDS, MAX_EPOCH_SECONDS + 1]),
)
timestamps = st.one_of(
    numbers,
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["yesterday", "", "1e400", "nan", "-inf", "9999-12-31T23:59:59Z", "0"]),
    st.text(max_size=40),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=5,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "model_id": st.one_of(st.text(max_size=300), scalars),
        "node_id": st.one_of(st.text(max_size=20), scalars),
        "ts": timestamps,
        "count": st.one_of(st.integers(-5, 20_000_000), scalars),
        "cold_start": scalars,
        "error": scalars,
        "latency": st.one_of(numbers, scalars),
        "name": st.one_of(st.sampled_from(["load_time", "latency", "memory"]), scalars),
        "value": st.one_of(numbers, scalars),
        "unit": st.one_of(st.text(max_size=300), scalars),
        "tenant": st.one_of(st.text(max_size=300), scalars),
        "events": json_values,
        "extra": json_values,
    },
)
items = st.one_of(event_like, json_values)
#: What envelopes hold: mostly events with a field or two wrong, some plain garbage.
envelope_items = st.one_of(
    st.fixed_dictionaries(
        {
            "model_id": st.one_of(st.text(min_size=1, max_size=12), scalars),
            "ts": st.one_of(st.floats(0, 2e9), timestamps),
        },
        optional={
            "count": st.integers(-5, 20_000_000),
            "latency": numbers,
            "name": st.sampled_from(["load_time", "latency", ""]),
            "value": numbers,
        },
    ),
    scalars,
)


def dumps(doc: Any) -> bytes:
    """JSON as a careless producer writes it: NaN and Infinity literals included."""
    return json.dumps(doc, allow_nan=True).encode()


def check(decoded: Decoded[Any], schema: type[BaseModel], expected_items: int | None) -> None:
    """The invariants of any decoding: accounted for, and safe to publish."""
    assert decoded.events or decoded.errors or decoded.envelope
    whole = [e for e in decoded.errors if e.index is None]
    if expected_items is not None and not (whole and not decoded.events):
        assert len(decoded.events) + len(decoded.errors) == expected_items
    for error in decoded.errors:
        assert error.reason in REASONS
        assert isinstance(error.raw, bytes)
        for text in (error.reason, error.error_class, error.message[:2000]):
            text.encode()  # dead-letter headers are UTF-8
        if error.index is not None:
            assert decoded.envelope
    for event in decoded.events:
        assert isinstance(event, schema)
        assert isinstance(event, UsageEvent | MetricEvent)
        assert 0 <= event.ts <= MAX_EPOCH_SECONDS and math.isfinite(event.ts)
        if isinstance(event, UsageEvent):
            assert 1 <= len(event.model_id) <= 256
            event.model_id.encode()  # a Kafka key
            assert event.count >= 1
            assert event.latency is None or (math.isfinite(event.latency) and event.latency >= 0)
        else:
            assert math.isfinite(event.value)
    if decoded.positions is not None:
        assert len(decoded.positions) == len(decoded.events)
        assert decoded.positions == sorted(set(decoded.positions))


@fuzz("bytes")
@given(st.binary(max_size=2048), st.sampled_from(SCHEMAS))
def test_arbitrary_bytes(raw: bytes, schema: type[BaseModel]) -> None:
    check(decode(raw, schema, max_bytes=MAX_BYTES, max_events=MAX_EVENTS), schema, None)


@fuzz("single")
@given(items, st.sampled_from(SCHEMAS))
def test_single_events(item: Any, schema: type[BaseModel]) -> None:
    raw = dumps(item)
    decoded = decode(raw, schema, max_bytes=MAX_BYTES, max_events=MAX_EVENTS)
    is_envelope = isinstance(item, list) or (
        isinstance(item, dict) and "events" in item and "model_id" not in item
    )
    check(decoded, schema, None if is_envelope else 1)


@fuzz("envelopes")
@given(st.lists(envelope_items, max_size=16), st.booleans(), st.sampled_from(SCHEMAS))
def test_envelopes(batch: list[Any], wrapped: bool, schema: type[BaseModel]) -> None:
    raw = dumps({"events": batch} if wrapped else batch)
    decoded = decode(raw, schema, max_bytes=MAX_BYTES, max_events=MAX_EVENTS)
    assert decoded.envelope or decoded.errors
    expected = len(batch) if len(batch) <= MAX_EVENTS and len(raw) <= MAX_BYTES else None
    check(decoded, schema, expected)


@fuzz("skew")
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.floats(0, MAX_EPOCH_SECONDS)), max_size=10
    ),
    st.floats(0, MAX_EPOCH_SECONDS),
    st.sampled_from([0.0, 1.0, 300.0, 86_400.0]),
    st.sampled_from([0.0, 1.0, 300.0, 86_400.0]),
    st.booleans(),
)
def test_skew_bounds_split_events_exactly(
    batch: list[tuple[str, float]], now: float, future: float, past: float, envelope: bool
) -> None:
    docs = [{"model_id": m, "ts": ts} for m, ts in batch] + [{"model_id": ""}]
    raw = dumps(docs if envelope else docs[0])
    decoded = reject_skewed(decode(raw, UsageEvent), now, future, past)
    check(decoded, UsageEvent, len(docs) if envelope else 1)
    for event in decoded.events:
        assert future <= 0 or event.ts <= now + future
        assert past <= 0 or event.ts >= now - past
    skewed = [e for e in decoded.errors if e.reason == "timestamp_skew"]
    expected = [
        i
        for i, (_, ts) in enumerate(batch if envelope else batch[:1])
        if (future > 0 and ts > now + future) or (past > 0 and ts < now - past)
    ]
    assert [e.index if envelope else 0 for e in skewed] == expected


@fuzz("nesting")
@given(
    st.integers(1, 5000),
    st.sampled_from(["[", '{"events":[', '{"a":']),
    st.sampled_from(["", '[{"model_id": "m", "ts": 60, "x": ', '[{"model_id": "m", "x": ']),
)
def test_deep_nesting_is_a_dead_letter_not_a_crash(depth: int, opener: str, inside: str) -> None:
    closer = {"[": "]", '{"events":[': "]}", '{"a":': "}"}[opener]
    nested = opener * depth + "1" + closer * depth
    raw = (inside + nested + "}]") if inside else nested
    decoded = decode(raw.encode(), UsageEvent, max_bytes=1 << 20)
    check(decoded, UsageEvent, None)


SEEDS = [
    b'{"model_id": "llama-8b", "ts": "2024-11-15T00:00:03Z", "count": 1, "latency": 0.21}',
    b'[{"model_id": "a", "ts": 60}, {"model_id": "b", "ts": 61, "cold_start": true}]',
    b'{"events": [{"model_id": "a", "ts": 60, "count": 3, "error": false}]}',
    b'{"model_id": "m", "ts": 1731628803, "name": "load_time", "value": 23.4, "unit": "seconds"}',
    b'[{"node_id": "n1", "ts": 60, "name": "memory", "value": 1e9}]',
]
TOKENS = [
    b"[" * 300,
    b"{" * 300,
    b"]",
    b"}",
    b"NaN",
    b"-Infinity",
    b"1e999",
    b'"\\ud800"',
    b"\xff\xfe",
    b'{"events":',
    b"null",
    b"-1",
    b"99999999999999999999999",
    b'"9999-12-31T23:59:59Z"',
    b",",
    b'"model_id"',
    b'"ts"',
    b":",
    b"\x00",
    b'"' + "\u00e9".encode() * 200 + b'"',
]


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip, insert a token or bytes, delete, duplicate, cut."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(data))
        op = rng.randrange(6)
        if op == 0 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[at:at] = rng.choice(TOKENS)
        elif op == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del data[at : at + rng.randint(1, 16)]
        elif op == 4:
            data[at:at] = data[at : at + rng.randint(1, 64)] * rng.randint(2, 50)
        else:
            del data[at:]
    return bytes(data)


@fuzz("mutants")
@given(st.randoms(use_true_random=False), st.sampled_from(SCHEMAS))
def test_mutated_valid_messages(rng: random.Random, schema: type[BaseModel]) -> None:
    for _ in range(MUTANTS_PER_EXAMPLE):
        raw = mutate(rng.choice(SEEDS), rng)
        check(decode(raw, schema, max_bytes=MAX_BYTES, max_events=MAX_EVENTS), schema, None)


def test_huge_messages_are_refused_unread() -> None:
    huge = b'[{"model_id": "m", "ts": 60}' + b', {"model_id": "m", "ts": 60}' * 200_000 + b"]"
    decoded = decode(huge, UsageEvent, max_bytes=1 << 20)
    assert [(e.reason, e.error_class) for e in decoded.errors] == [("oversize", "MessageTooLarge")]
    many = b"[" + b",".join([b"{}"] * 20_000) + b"]"
    decoded = decode(many, UsageEvent, max_bytes=1 << 20, max_events=10_000)
    assert [(e.reason, e.error_class) for e in decoded.errors] == [("oversize", "EnvelopeTooLarge")]


def test_non_finite_numbers_are_schema_violations() -> None:
    for doc in (
        b'{"model_id": "m", "ts": NaN}',
        b'{"model_id": "m", "ts": 60, "latency": Infinity}',
        b'{"model_id": "m", "ts": 1e999}',
    ):
        decoded = decode(doc, UsageEvent)
        assert decoded.events == [] and len(decoded.errors) == 1, doc
    metric = decode(b'{"node_id": "n", "ts": 60, "name": "x", "value": "-inf"}', MetricEvent)
    assert [e.reason for e in metric.errors] == ["schema_violation"]
