"""Contracts: round trips, timestamps, envelopes, and JSON Schema files in sync."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas import (
    Alert,
    EventError,
    HealthSnapshot,
    MetricEvent,
    UsageEvent,
    WarmupCommand,
    decode,
)
from schemas.control import ControlCommand
from schemas.deadletter import DeadLetterHeaders
from schemas.export import CONTRACTS, drifted, export, render

ids = st.text(min_size=1, max_size=40)
epoch = st.floats(min_value=0, max_value=4e9, allow_nan=False)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
unit = st.floats(min_value=0, max_value=1, allow_nan=False)
positive = st.floats(min_value=0, max_value=1e9, allow_nan=False)

STRATEGIES: dict[type[BaseModel], st.SearchStrategy[BaseModel]] = {
    UsageEvent: st.builds(
        UsageEvent,
        model_id=ids,
        ts=epoch,
        count=st.integers(1, 10_000),
        cold_start=st.none() | st.booleans(),
        latency=st.none() | positive,
        tenant=st.none() | st.text(max_size=20),
        user=st.none() | st.text(max_size=20),
        node=st.none() | st.text(max_size=20),
    ),
    MetricEvent: st.builds(
        MetricEvent,
        model_id=ids,
        node_id=st.none() | ids,
        ts=epoch,
        name=ids,
        value=finite,
        unit=st.sampled_from(["seconds", "bytes", ""]),
    ),
    WarmupCommand: st.builds(
        lambda start, length, **kw: WarmupCommand(start=start, end=start + length, **kw),
        start=epoch,
        length=st.floats(min_value=0, max_value=1e6),
        command_id=ids,
        model_id=ids,
        action=st.sampled_from(["warm", "release"]),
        issued_at=epoch,
        priority=st.integers(0, 4),
        probability=st.none() | unit,
        confidence=st.none() | unit,
        reason=st.text(max_size=50),
        policy_version=ids,
    ),
    Alert: st.builds(
        Alert,
        fingerprint=ids,
        kind=ids,
        severity=st.sampled_from(["info", "warning", "critical"]),
        state=st.sampled_from(["firing", "resolved"]),
        subject=st.text(max_size=40),
        summary=st.text(max_size=80),
        value=st.none() | finite,
        threshold=st.none() | finite,
        ts=epoch,
    ),
    HealthSnapshot: st.builds(
        HealthSnapshot,
        model_id=ids,
        ts=epoch,
        window_seconds=st.floats(min_value=1, max_value=1e5),
        requests_total=st.integers(0, 10**9),
        cold_starts_total=st.integers(0, 10**9),
        request_rate=positive,
        cold_start_rate=unit,
        latency_mean=st.none() | positive,
        last_seen=epoch,
        loaded_until=st.none() | epoch,
    ),
    ControlCommand: st.one_of(
        st.builds(
            ControlCommand,
            command=st.sampled_from(["emergency_stop", "resume", "reset_to_safe"]),
            id=st.text(min_size=1, max_size=64),
            release=st.booleans(),
            issued_by=st.text(max_size=20),
            ts=epoch,
        ),
        st.builds(
            ControlCommand,
            command=st.sampled_from(["snapshot", "restore"]),
            name=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
            ts=epoch,
        ),
    ),
    DeadLetterHeaders: st.builds(
        DeadLetterHeaders,
        original_topic=ids,
        original_partition=st.integers(0, 10**4).map(str),
        original_offset=st.integers(0, 2**62).map(str),
        error_class=ids,
        error_reason=ids,
        error_message=st.text(max_size=2000),
        envelope_index=st.none() | st.integers(0, 10**4).map(str),
        truncated=st.none() | st.just("true"),
        original_size=st.none() | st.integers(0, 2**31).map(str),
        original_sha256=st.none() | st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        original_last_offset=st.none() | st.integers(0, 2**62).map(str),
        codec=st.none() | st.sampled_from(["gzip", "snappy", "lz4", "zstd"]),
        skipped_by=st.none() | st.text(max_size=256),
    ),
}


def test_every_contract_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(CONTRACTS.values())


@pytest.mark.parametrize("contract", list(STRATEGIES), ids=lambda c: c.__name__)
def test_round_trip_through_json(contract: type[BaseModel]) -> None:
    @given(STRATEGIES[contract])
    def check(instance: BaseModel) -> None:
        text = instance.model_dump_json()
        assert contract.model_validate_json(text) == instance
        assert contract.model_validate(orjson.loads(text)) == instance

    check()


@given(STRATEGIES[UsageEvent])
def test_usage_decodes_alone_and_in_both_envelopes(event: BaseModel) -> None:
    doc = event.model_dump()
    for body in (doc, [doc, doc], {"events": [doc]}):
        out = decode(orjson.dumps(body), UsageEvent)
        assert not out.errors
        assert all(e == event for e in out.events)
        assert out.envelope == (body is not doc)


def test_timestamps_are_epoch_seconds_or_rfc3339() -> None:
    as_text = UsageEvent(model_id="m", ts="2024-11-15T00:00:03+00:00")  # type: ignore[arg-type]
    naive = UsageEvent(model_id="m", ts="2024-11-15 00:00:03")  # type: ignore[arg-type]
    assert as_text.ts == naive.ts == 1731628803.0
    assert UsageEvent(model_id="m", ts=60).ts == 60.0
    bad_text = ("yesterday", "nan", "-5", " 60.5 ", "60", "2024-11-15", "2024-11-15T00:00Z")
    for bad in (*bad_text, float("nan"), float("inf"), -5, True, 1e12, None):
        with pytest.raises(ValidationError, match=r"epoch seconds .* or an RFC 3339 string"):
            UsageEvent(model_id="m", ts=bad)


def test_contract_rules() -> None:
    with pytest.raises(ValidationError, match="model_id or node_id"):
        MetricEvent(ts=0, name="load_time", value=1.0)
    with pytest.raises(ValidationError, match="end must not be before start"):
        WarmupCommand(
            command_id="c",
            model_id="m",
            action="warm",
            issued_at=0,
            start=120,
            end=60,
            policy_version="p",
        )
    with pytest.raises(ValidationError):
        UsageEvent(model_id="m", ts=0, count=0)
    assert math.isnan(float("nan"))  # sanity: the strategies above never draw NaN


def test_envelope_keeps_good_events_and_reports_each_bad_one() -> None:
    body = orjson.dumps(
        {"events": [{"model_id": "a", "ts": 1}, {"ts": 2}, 7, {"model_id": "b", "ts": 3}]}
    )
    out = decode(body, UsageEvent)
    assert [e.model_id for e in out.events] == ["a", "b"]
    assert [(e.index, e.reason) for e in out.errors] == [
        (1, "schema_violation"),
        (2, "schema_violation"),
    ]
    assert orjson.loads(out.errors[1].raw) == 7


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{nope", "malformed_json"),
        (b"", "malformed_json"),
        (b'{"events": 3}', "bad_envelope"),
        (b"x" * 2048, "oversize"),
        (orjson.dumps([{"model_id": "a", "ts": 1}] * 11), "oversize"),
        (b'"just a string"', "schema_violation"),
    ],
)
def test_whole_message_failures(raw: bytes, reason: str) -> None:
    out = decode(raw, UsageEvent, max_bytes=1024, max_events=10)
    assert not out.events
    assert [e.reason for e in out.errors] == [reason]
    assert out.errors[0].message


def test_schema_files_match_the_models() -> None:
    assert drifted() == [], "schema files are stale: run `warmcast schemas export`"


def test_drift_is_detected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    export(tmp_path)
    assert drifted(tmp_path) == []
    (tmp_path / "alert.json").write_bytes(render("alert").replace(b"fingerprint", b"fp"))
    (tmp_path / "usage_event.json").unlink()
    assert drifted(tmp_path) == ["usage_event", "alert"]


def test_a_dead_letters_headers_are_the_contracts() -> None:
    from streams.deadletters import error_headers
    from streams.sending import truncate_to_fit
    from tests.outgoing import check

    refused = EventError("schema_violation", "ValidationError", "x" * 3000)
    headers = [*error_headers("t.usage.v1", 3, 42, refused), ("warmcast.envelope-index", b"2")]
    _, _, cut = truncate_to_fit(b"k", b"v" * 5000, headers, limit=1000)
    parsed = DeadLetterHeaders.from_headers(cut)
    assert (parsed.original_topic, parsed.original_partition, parsed.original_offset) == (
        "t.usage.v1",
        "3",
        "42",
    )
    assert (parsed.envelope_index, parsed.truncated, parsed.original_size) == ("2", "true", "5000")
    assert len(parsed.error_message) == 2000
    check("dead_letter_headers", {name: value.decode() for name, value in cut})
    with pytest.raises(ValidationError):  # a header no dead letter has
        DeadLetterHeaders.from_headers([*cut, ("warmcast.made-up", b"1")])
    with pytest.raises(ValidationError):  # an offset that is not a whole number
        DeadLetterHeaders.from_headers([(n, b"-1" if n.endswith("offset") else v) for n, v in cut])


def test_an_alert_with_a_long_summary_is_published_within_its_contract() -> None:
    from engine.alerting import AlertTransition
    from streams.publishers import alert_record

    long = AlertTransition(
        "f1", "delivery_failed", "critical", "firing", "t" * 300, "s" * 1000, 0.0, None, 1.0
    )
    record = Alert.model_validate(alert_record(long))
    assert len(record.summary) == len(record.subject) == 256 and record.summary.endswith("...")
    short = AlertTransition("f2", "stale_data", "warning", "firing", "t.usage.v1", "ok", 1, 0, 1)
    assert Alert.model_validate(alert_record(short)).summary == "ok"
