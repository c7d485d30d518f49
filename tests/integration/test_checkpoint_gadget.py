"""A checkpoint signed with the key that tries to run a command when it is restored.

Whoever holds the checkpoint key (or a worker's memory) can write a record that verifies;
its pickle may still name only the classes learned state is made of. The worker refuses
it, counts it, says why, learns the partition afresh and goes on.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from engine.checkpoint import CheckpointHeader, seal
from streams.kafka import ensure_topics
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings
from tests.engine.gadgets import system_gadget
from tests.integration.harness import Worker, namespace, produce, topic, wait_for

pytestmark = pytest.mark.integration

KEY = "checkpoint key of the gadget test, 32 bytes or more"
TOKEN = "control token of the gadget test"
CONTROL_KEY = "control key of the gadget test, 32 bytes or more"
REFUSED = 'warmcast_checkpoints_rejected_total{reason="forbidden_class"}'


async def test_a_signed_checkpoint_that_would_run_a_command_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = namespace()
    await ensure_topics(
        WarmcastSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_namespace=ns, partitions=2)
    )
    marker = tmp_path / "marker"
    gadget = system_gadget(str(marker))
    records = []
    for name in ("", "evil"):
        header = CheckpointHeader(
            partition=0, offsets={"usage": 0}, policy="hybrid", namespace=ns, name=name
        )
        key = b"0" if not name else b"0@" + name.encode()
        records.append((key, seal(gadget, header, KEY.encode())))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic(ns, "checkpoints"), value, key=key, partition=0)
    finally:
        await producer.stop()

    worker = Worker(
        kafka_bootstrap,
        tmp_path,
        ns,
        policy="hybrid",
        partitions=2,
        checkpoint_key=KEY,
        control_token=TOKEN,
        control_key=CONTROL_KEY,
    ).start()
    try:
        metrics = wait_for(
            lambda: (m := worker.metrics()).get(REFUSED) and m, 60, "the checkpoint refused"
        )
        assert metrics[REFUSED] == 1
        assert metrics['warmcast_restores_total{outcome="rejected"}'] == 1
        assert "river.datasets.base.os.system is not a class a checkpoint may hold" in (
            worker.log.read_text()
        )

        # The same pickle as an operator's named snapshot: refused and counted too.
        request = urllib.request.Request(
            f"http://127.0.0.1:{worker.port}/control/restore",
            data=orjson.dumps({"name": "evil"}),
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with contextlib.suppress(urllib.error.HTTPError):  # the endpoint's answer: not ours
            urllib.request.urlopen(request, timeout=30).close()
        wait_for(lambda: worker.metrics().get(REFUSED) == 2, 60, "the snapshot refused")

        # The partition learns afresh: its events are processed as usual.
        model = next(m for m in (f"m{i}" for i in range(100)) if partition_for(m, 2) == 0)
        event = {"model_id": model, "ts": 1_700_000_000.0, "count": 1}
        await produce(kafka_bootstrap, topic(ns, "usage"), [(model.encode(), orjson.dumps(event))])
        wait_for(lambda: worker.metrics().get("warmcast_usage_events_total") == 1, 60, "the event")
    finally:
        assert worker.stop() == 0
    assert not marker.exists(), "a signed checkpoint ran a command"
