"""Checkpoints: a restored engine decides as if it had never stopped, and nothing that is
not signed with the key is ever unpickled."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.anomaly import MetricAnomalies
from engine.checkpoint import (
    MAGIC,
    CheckpointHeader,
    CheckpointRejected,
    PartitionState,
    pack,
    restore,
    seal,
    unseal,
)
from engine.core import WarmupEngine
from engine.lease import Command
from engine.registry import make_policy
from engine.timebase import MinuteGrid
from tools.traces import Trace, load_azure

SAMPLE = Path(__file__).resolve().parents[2] / "tools" / "samples" / "azure2019_150fn_4h.csv.gz"
T0 = 1_563_177_600.0
KEY = b"a checkpoint key for the tests"
HEADER = CheckpointHeader(partition=1, offsets={"usage": 10, "metrics": 3}, policy="hybrid")

#: Set by :class:`Detonator` when it is unpickled: it must never be.
DETONATED: list[str] = []


class Detonator:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (DETONATED.append, ("unpickled",))


@pytest.fixture(scope="module")
def trace() -> Trace:
    return load_azure(SAMPLE, t0=T0)


def engine_for(spec: str, trace: Trace) -> WarmupEngine:
    knobs = {"knob": 1.0} if spec == "warmcast" else {}
    return WarmupEngine(make_policy(spec, **knobs), grid=MinuteGrid(origin=trace.t0))


def feed(engine: WarmupEngine, events: list[tuple[float, str, int]]) -> list[Command]:
    out: list[Command] = []
    for ts, model_id, count in events:
        out += engine.observe(model_id, ts, count)
    return out


@pytest.mark.parametrize("spec", ["fixed:10", "hybrid", "warmcast"])
def test_a_restored_engine_decides_like_one_that_never_stopped(spec: str, trace: Trace) -> None:
    events = trace.events
    half = len(events) // 2
    uninterrupted = engine_for(spec, trace)
    feed(uninterrupted, events[:half])
    expected = feed(uninterrupted, events[half:]) + uninterrupted.advance(trace.end_ts)

    first = engine_for(spec, trace)
    feed(first, events[:half])
    anomalies = MetricAnomalies(("load_time",))
    anomalies.observe("m", "load_time", 20.0, T0)
    record = seal(pack(PartitionState(first, anomalies)), HEADER, KEY)
    del first
    header, payload = unseal(record, KEY)
    state = restore(payload)
    got = feed(state.engine, events[half:]) + state.engine.advance(trace.end_ts)

    assert header == HEADER
    assert len(expected) > 100
    assert [c.to_dict() for c in got] == [c.to_dict() for c in expected]
    assert isinstance(state.anomalies, MetricAnomalies)


def test_a_record_without_the_right_tag_is_refused_before_it_is_read() -> None:
    engine = WarmupEngine(make_policy("hybrid"))
    state = PartitionState(engine, anomalies=Detonator())
    sealed = seal(pack(state), HEADER, KEY)
    with pytest.raises(CheckpointRejected) as wrong_key:
        unseal(sealed, b"another key")
    assert wrong_key.value.reason == "bad_signature"

    bare = pickle.dumps(state)
    with pytest.raises(CheckpointRejected) as unsigned:
        unseal(bare, KEY)
    assert unsigned.value.reason == "unsigned"

    # The right layout with a forged tag: same outcome, the pickle stays unread.
    forged = MAGIC + b"\0" * 32 + sealed[len(MAGIC) + 32 :]
    with pytest.raises(CheckpointRejected) as bad:
        unseal(forged, KEY)
    assert bad.value.reason == "bad_signature"
    assert DETONATED == []


def test_a_signed_state_naming_a_callable_outside_the_engine_is_not_restored() -> None:
    """Even with the key, a checkpoint cannot make the worker call arbitrary functions."""
    sealed = seal(pickle.dumps(Detonator()), HEADER, KEY)
    _, payload = unseal(sealed, KEY)
    with pytest.raises(CheckpointRejected) as refused:
        restore(payload)
    assert refused.value.reason == "forbidden_class"
    assert DETONATED == []


def test_an_oversized_state_is_refused_without_inflating_it_whole() -> None:
    bomb = seal(b"\0" * 5_000_000, HEADER, KEY)
    _, payload = unseal(bomb, KEY)
    assert len(payload) < 20_000
    with pytest.raises(CheckpointRejected) as refused:
        restore(payload, max_bytes=1_000_000)
    assert refused.value.reason == "too_large"


def test_a_payload_that_is_not_a_partition_state_is_incompatible() -> None:
    _, payload = unseal(seal(pickle.dumps({"engine": 1}), HEADER, KEY), KEY)
    with pytest.raises(CheckpointRejected) as refused:
        restore(payload)
    assert refused.value.reason == "incompatible"
    with pytest.raises(CheckpointRejected):
        restore(zlib.compress(b"not a pickle"))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_changed_byte_is_detected(data: st.DataObject) -> None:
    engine = WarmupEngine(make_policy("fixed:10"))
    engine.observe("m", 60.0)
    sealed = seal(pack(PartitionState(engine)), HEADER, KEY)
    at = data.draw(st.integers(0, len(sealed) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    tampered = sealed[:at] + bytes([sealed[at] ^ flip]) + sealed[at + 1 :]
    with pytest.raises(CheckpointRejected) as refused:
        unseal(tampered, KEY)
    assert refused.value.reason in ("unsigned", "bad_signature")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(CheckpointRejected):
        unseal(MAGIC + raw, KEY)


def test_no_key_no_checkpoint() -> None:
    with pytest.raises(ValueError, match="key"):
        seal(b"", HEADER, b"")
    with pytest.raises(ValueError, match="key"):
        unseal(b"", b"")
