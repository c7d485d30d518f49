"""Stale data and dead-letter bursts fire and resolve on the alerts topic."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.alert import Alert
from tests.integration.harness import Worker, consume, namespace, produce, topic, usage

pytestmark = pytest.mark.integration


def transitions(records: list[Any]) -> list[tuple[str, str]]:
    return [(a.kind, a.state) for a in (Alert.model_validate_json(r.value) for r in records)]


async def test_stale_data_and_dead_letter_burst_fire_and_resolve(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = namespace()
    worker = Worker(
        kafka_bootstrap,
        tmp_path,
        ns,
        stale_after_seconds=2,
        alert_check_seconds=0.5,
        dead_letter_burst=3,
        dead_letter_window_seconds=4,
        alert_for_seconds=0,
        alert_keep_firing_seconds=0,
        alerts_disabled="insufficient_volume,health_degraded",
    ).start()
    alerts = [topic(ns, "alerts")]
    try:
        seen = await consume(
            kafka_bootstrap, alerts, lambda r: ("stale_data", "firing") in transitions(r)
        )
        stale = Alert.model_validate_json(seen[0].value)
        assert stale.value is not None and stale.threshold == 2.0 and stale.severity == "warning"

        await produce(
            kafka_bootstrap, topic(ns, "usage"), [(b"m", orjson.dumps(usage("m", time.time())))]
        )
        seen = await consume(
            kafka_bootstrap, alerts, lambda r: ("stale_data", "resolved") in transitions(r)
        )
        fired, resolved = (Alert.model_validate_json(r.value) for r in seen[:2])
        assert fired.fingerprint == resolved.fingerprint

        await produce(kafka_bootstrap, topic(ns, "usage"), [(b"x", b"not json")] * 3)
        seen = await consume(
            kafka_bootstrap,
            alerts,
            lambda r: ("dead_letter_burst", "resolved") in transitions(r),
        )
        kinds = transitions(seen)
        assert kinds.index(("dead_letter_burst", "firing")) < kinds.index(
            ("dead_letter_burst", "resolved")
        )
        burst = next(
            Alert.model_validate_json(r.value)
            for r in seen
            if b"dead_letter_burst" in r.value and b"firing" in r.value
        )
        assert burst.value == 3 and burst.threshold == 3 and burst.severity == "critical"
        assert all(r.key == orjson.loads(r.value)["fingerprint"].encode() for r in seen)
        metrics = worker.metrics()
        assert metrics['warmcast_alerts_total{kind="dead_letter_burst",state="firing"}'] == 1
    finally:
        worker.stop()
