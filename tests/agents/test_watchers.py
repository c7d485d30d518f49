"""The agents that watch the worker, called directly: readiness, deliveries held, the
idle-partition timer (the producer records; no broker)."""

from __future__ import annotations

import asyncio
import time

import orjson
from faust.types import TP

from agents.alerts import advance_idle
from schemas.usage import UsageEvent
from streams.sending import Delivery
from tests.agents.recording import recording_worker


def test_a_worker_is_starting_until_it_has_its_partitions() -> None:
    w = recording_worker()
    ready, state, reasons = w.parts.probes.readiness(time.time())
    assert (ready, state) == (False, "starting") and reasons
    w.app.runtime.started = True
    assert w.parts.probes.readiness(time.time())[:2] == (True, "ready")
    assert w.parts.probes.ready._value.get() == 1


def test_a_held_input_partition_fires_delivery_failed_and_resolves() -> None:
    w = recording_worker()
    runtime = w.app.runtime

    async def go() -> None:
        tp = TP("warmcast.usage.v1", 3)
        w.parts.delivery.on_hold(tp, 41, Delivery("warmcast.warmup.v1", 0, 1, 10))
        firing = [a for a in runtime.alerts.firing.values() if a.kind == "delivery_failed"]
        assert [(a.subject, a.value) for a in firing] == [("warmcast.usage.v1/3", 41.0)]
        w.parts.delivery.on_resume(tp, released=False)
        assert not [a for a in runtime.alerts.firing.values() if a.kind == "delivery_failed"]
        await asyncio.sleep(0)  # the announcements' own tasks run
        await asyncio.sleep(0)

    asyncio.run(go())
    states = [orjson.loads(r.value or b"")["state"] for r in w.producer.on("warmcast.alerts.v1")]
    assert states == ["firing", "resolved"]
    assert runtime.metrics.input_holds.labels(topic="warmcast.usage.v1")._value.get() == 1


def test_a_quiet_live_partition_closes_its_minutes_on_the_wall_clock() -> None:
    w = recording_worker(partitions=2, policy="fixed:10")
    runtime = w.app.runtime
    now = time.time()
    live = [UsageEvent(model_id="m", ts=now - 3600)]
    history = [UsageEvent(model_id="n", ts=now - 8 * 3600)]  # a replay of old history
    runtime.apply_usage(0, live, lambda m: None, now)
    runtime.apply_usage(1, history, lambda m: None, now)
    before = {p: e.watermark for p, e in runtime.engines.items()}

    asyncio.run(advance_idle(w.app, now))
    after = {p: e.watermark for p, e in runtime.engines.items()}
    lag = runtime.settings.idle_advance_seconds
    assert after[0] is not None and before[0] is not None
    assert after[0] > before[0] and after[0] >= now - lag - 120  # closed up to the wall clock
    assert after[1] == before[1]  # moves on its own event time alone
