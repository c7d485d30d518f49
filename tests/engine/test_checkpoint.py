"""Checkpoints: a restored engine decides as if it had never stopped, and nothing that is
not signed with the key is ever unpickled."""

from __future__ import annotations

import csv
import io
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

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
from engine.registry import make_budget, make_policy
from engine.restorable import CLASSES, RECONSTRUCTORS, Unrestorable, resolve
from engine.timebase import MinuteGrid
from engine.warmcast import WarmcastConfig, WarmcastPolicy
from tests.engine.gadgets import dotted_call, system_gadget
from tools.traces import Trace, load_azure

SAMPLES = Path(__file__).resolve().parents[2] / "tools" / "samples"
SAMPLE = SAMPLES / "azure2019_150fn_4h.csv.gz"
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


def test_a_checkpoint_written_before_a_setting_existed_restores_with_its_default(
    trace: Trace, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = trace.events
    half = len(events) // 2
    uninterrupted = engine_for("warmcast", trace)
    feed(uninterrupted, events[:half])
    expected = feed(uninterrupted, events[half:]) + uninterrupted.advance(trace.end_ts)

    first = engine_for("warmcast", trace)
    feed(first, events[:half])
    written = object.__getstate__

    def without_size_weight(config: WarmcastConfig) -> tuple[None, dict[str, object]]:
        _, settings = written(config)
        del settings["size_weight"]
        return None, settings

    with monkeypatch.context() as patch:  # as a worker from before the setting wrote it
        patch.setattr(WarmcastConfig, "__getstate__", without_size_weight, raising=False)
        pickled = pack(PartitionState(first, MetricAnomalies(("load_time",))))
    assert b"size_weight" not in pickled
    state = restore(unseal(seal(pickled, HEADER, KEY), KEY)[1])
    policy = state.engine.policy
    assert isinstance(policy, WarmcastPolicy) and policy.config.size_weight == 0.0
    got = feed(state.engine, events[half:]) + state.engine.advance(trace.end_ts)
    assert len(expected) > 100
    assert [c.to_dict() for c in got] == [c.to_dict() for c in expected]


def test_a_warmcast_state_from_before_the_long_return_prewarms_restores(trace: Trace) -> None:
    events = trace.events
    half = len(events) // 2

    def learner_trusted_early() -> WarmupEngine:
        policy = WarmcastPolicy(knob=1.0, min_samples=200)
        return WarmupEngine(policy, grid=MinuteGrid(origin=trace.t0))

    uninterrupted = learner_trusted_early()
    feed(uninterrupted, events[:half])
    expected = feed(uninterrupted, events[half:]) + uninterrupted.advance(trace.end_ts)

    first = learner_trusted_early()
    feed(first, events[:half])
    policy = first.policy
    assert isinstance(policy, WarmcastPolicy) and policy._shadow and not policy._later
    # as a worker from before wrote it: no pre-warms, the guard's baseline a bare lease
    policy._shadow = {m: lease for m, (lease, _) in policy._shadow.items()}  # type: ignore[misc]
    del policy._later
    policy.version = "warmcast/1"
    state = restore(unseal(seal(pack(PartitionState(first, None)), HEADER, KEY), KEY)[1])
    restored = state.engine.policy
    assert isinstance(restored, WarmcastPolicy) and restored._later == {}
    assert all(isinstance(v, tuple) for v in restored._shadow.values())
    assert restored.version == WarmcastPolicy.VERSION != "warmcast/1"
    got = feed(state.engine, events[half:]) + state.engine.advance(trace.end_ts)
    assert [c.to_dict() for c in got] == [c.to_dict() for c in expected]


@pytest.mark.parametrize("spec", ["lru", "gdsf", "hybrid+lru", "warmcast"])
def test_a_restored_budget_decides_like_one_that_never_stopped(spec: str, trace: Trace) -> None:
    def budgeted() -> WarmupEngine:
        engine = engine_for(spec, trace)
        engine.budget = make_budget(spec, 12.0, counts_models=True)  # 12 of 150 models
        return engine

    events = trace.events
    half = len(events) // 2
    uninterrupted = budgeted()
    feed(uninterrupted, events[:half])
    expected = feed(uninterrupted, events[half:]) + uninterrupted.advance(trace.end_ts)
    first = budgeted()
    feed(first, events[:half])
    state = restore(unseal(seal(pack(PartitionState(first)), HEADER, KEY), KEY)[1])
    got = feed(state.engine, events[half:]) + state.engine.advance(trace.end_ts)
    assert sum(1 for c in expected if c.reason.startswith("evicted for ")) > 100
    assert [c.to_dict() for c in got] == [c.to_dict() for c in expected]


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


def sealed_payload(pickled: bytes) -> bytes:
    """A payload as :func:`restore` gets it: signed with the key and verified."""
    return unseal(seal(pickled, HEADER, KEY), KEY)[1]


def test_a_signed_pickle_reaching_os_system_by_a_dotted_name_runs_nothing(
    tmp_path: Path,
) -> None:
    """``river.datasets.base`` imports ``os``: a protocol-4 name ``os.system`` under it is
    one attribute walk from running a command. The restore refuses it by name."""
    marker = tmp_path / "marker"
    gadget = system_gadget(str(marker))
    pickle.loads(gadget)  # the gadget is real: a plain unpickler runs the command
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointRejected) as refused:
        restore(sealed_payload(gadget))
    assert refused.value.reason == "forbidden_class"
    assert "river.datasets.base.os.system" in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("engine.core", "WarmupEngine.__init__.__globals__"),  # walks from a listed class
        ("engine.checkpoint", "pickle.loads"),  # a module the engine imports
        ("river.stats.mean", "Mean.__class__"),
        ("river.stats", "Mean"),  # a listed class, by another module's name for it
        ("engine.warmcast", "make_policy"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("copyreg", "_reconstructor"),
        ("os", "system"),
        ("posix", "system"),
        ("subprocess", "Popen"),
    ],
)
def test_only_exact_listed_names_are_rebuilt(module: str, name: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(CheckpointRejected) as refused:
        restore(sealed_payload(dotted_call(module, name, f"touch {marker}")))
    assert refused.value.reason == "forbidden_class"
    assert f"{module}.{name}" in str(refused.value)
    assert not marker.exists()


def test_a_listed_name_that_resolves_to_something_else_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The name alone is not enough: it must still be the class it was listed as."""
    import engine.timebase

    marker = tmp_path / "marker"
    monkeypatch.setattr(engine.timebase, "MinuteGrid", os.system)
    with pytest.raises(CheckpointRejected) as refused:
        restore(sealed_payload(dotted_call("engine.timebase", "MinuteGrid", f"touch {marker}")))
    assert refused.value.reason == "forbidden_class"
    assert not marker.exists()


def test_every_listed_name_resolves_to_what_it_is_listed_as() -> None:
    for module, names in CLASSES.items():
        for name in names:
            found = resolve(module, name)
            assert isinstance(found, type), (module, name)
    for module, names in RECONSTRUCTORS.items():
        for name in names:
            assert callable(resolve(module, name)), (module, name)
    with pytest.raises(Unrestorable):
        resolve("river.datasets.base", "os")


class RecordingUnpickler(pickle.Unpickler):
    """A plain unpickler that notes every global a pickle names."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(io.BytesIO(raw))
        self.named: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.named.add((module, name))
        return super().find_class(module, name)


def busy_state(spec: str, trace: Trace) -> PartitionState:
    """A partition that has seen the whole sample, load times and memory sizes, anomaly
    learners of two metrics, and an operator's safe mode (a learned policy set aside)."""
    with open(SAMPLES / "azure2019_150fn_memory.csv", newline="") as f:
        memory = {row["HashApp"]: float(row["AverageAllocatedMb"]) for row in csv.DictReader(f)}
    engine = engine_for(spec, trace)
    anomalies = MetricAnomalies(("load_time", "latency"))
    for i, (ts, model_id, count) in enumerate(trace.events):
        engine.observe(model_id, ts, count)
        if i % 7 == 0:
            load_time = 5.0 + (i % 13) / 4 if i < len(trace.events) // 2 else 60.0 + i % 3
            engine.observe_metric(model_id, "load_time_seconds", load_time, ts)
            anomalies.observe(model_id, "load_time", load_time, ts)
            anomalies.observe(model_id, "latency", (i % 17) / 10, ts)
            if model_id in memory:
                engine.observe_metric(model_id, "memory_mb", memory[model_id], ts)
    engine.advance(trace.end_ts + 3600)
    return PartitionState(engine, anomalies, learned_policy=make_policy("hybrid"))


@pytest.mark.parametrize("spec", ["fixed:10", "hybrid", "warmcast"])
def test_every_class_a_real_checkpoint_holds_is_listed(spec: str, trace: Trace) -> None:
    state = busy_state(spec, trace)
    pickled = pack(state)
    recorder = RecordingUnpickler(pickled)
    recorder.load()
    unlisted = {
        (m, n)
        for m, n in recorder.named
        if n not in CLASSES.get(m, ()) and n not in RECONSTRUCTORS.get(m, ())
    }
    assert unlisted == set()
    assert ("engine.anomaly", "RobustZScore") in recorder.named
    if spec == "warmcast":
        assert ("river.linear_model.log_reg", "LogisticRegression") in recorder.named

    restored = restore(sealed_payload(pickled))
    assert type(restored.engine.policy) is type(state.engine.policy)
    assert restored.engine.leases == state.engine.leases
    assert restored.engine.stats == state.engine.stats
    later = [(ts + 5 * 3600, m, c) for ts, m, c in trace.events[:3000]]
    expected = [c.to_dict() for c in feed(state.engine, later)]
    assert len(expected) > 100
    assert [c.to_dict() for c in feed(restored.engine, later)] == expected
