"""Record batches as producers write them: compressed with every codec Kafka has, and
batches that cannot be decoded, which pause their own partition (with an alert) until
the operator installs the codec and restarts, or skips the batch to the dead letters."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import BrokerResponseError

from schemas.alert import Alert
from streams.kafka import ensure_topics
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings
from tests.integration.harness import Worker, consume, namespace, produce, topic, usage, wait_for
from tests.integration.rawbatch import Damage, damaged, produce_raw, record_batch
from tests.ops.workers import AlertLog

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0
TOKEN = "a control token for the tests"
CONTROL_KEY = "a control key for the record batch tests"
KIND = "undecodable_batch"
#: How each damage shows when the batch is decoded.
HARM: dict[Damage, str] = {
    "codec_mismatch": "DecompressionError",
    "unknown_codec": "UnsupportedCodecError",
    "bad_crc": "CorruptRecordException",
}


def owned_by(partition: int, prefix: str, n: int) -> list[str]:
    """``n`` model ids that partition ``partition`` of two owns."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        model_id = f"{prefix}-{i}"
        i += 1
        if partition_for(model_id, 2) == partition:
            out.append(model_id)
    return out


def event(model_id: str) -> tuple[bytes, bytes]:
    return model_id.encode(), orjson.dumps(usage(model_id, T0))


async def two_partition_topics(bootstrap: str, ns: str) -> None:
    settings = WarmcastSettings(kafka_bootstrap_servers=bootstrap, topic_namespace=ns)
    await ensure_topics(settings.model_copy(update={"partitions": 2}))


async def produce_compressed(bootstrap: str, topic_name: str, codec: str, models: list[str]):
    """One event per model, compressed with ``codec``, gathered into record batches."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50)
    await producer.start()
    try:
        sent = [await producer.send(topic_name, event(m)[1], key=m.encode()) for m in models]
        await producer.flush()
        for future in sent:
            await future
    finally:
        await producer.stop()


async def commands_for(bootstrap: str, ns: str, models: set[str]) -> set[str]:
    """Read the warmup topic until every model of ``models`` has a command."""
    records = await consume(
        bootstrap,
        [topic(ns, "warmup")],
        until=lambda rs: models <= {orjson.loads(r.value)["model_id"] for r in rs},
        timeout=90,
    )
    return {orjson.loads(r.value)["model_id"] for r in records}


def skip(worker: Worker, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.port}/control/skip-batch",
        data=orjson.dumps(body),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(orjson.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(orjson.loads(exc.read()))


def series(worker: Worker, name: str, topic_name: str, **labels: str) -> float:
    """A worker's series ``name`` of ``topic_name`` (labels in order: reason, topic)."""
    pairs = [*labels.items(), ("topic", topic_name)]
    return worker.metrics()[name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"]


def firing_at(log: AlertLog, subject: str, offset: int) -> Alert | None:
    """The latest undecodable-batch alert of ``subject``, if it fires at ``offset``."""
    mine = [a for a in log.alerts if a.kind == KIND and a.subject == subject]
    if mine and mine[-1].state == "firing" and mine[-1].value == offset:
        return mine[-1]
    return None


async def test_usage_compressed_with_every_codec_reaches_the_engine(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The worker writes its own batches with zstd: commands, alerts, health changelog.
    ns = namespace()
    worker = Worker(kafka_bootstrap, tmp_path, ns, policy="fixed:10", producer_compression="zstd")
    worker.start()
    try:
        expected: set[str] = set()
        for codec in ("gzip", "snappy", "lz4", "zstd"):
            models = [f"{codec}-model-{i}" for i in range(6)]
            await produce_compressed(kafka_bootstrap, topic(ns, "usage"), codec, models)
            expected.update(models)
        assert await commands_for(kafka_bootstrap, ns, expected) == expected
        wait_for(
            lambda: worker.metrics().get("warmcast_usage_events_total") == len(expected),
            30,
            "every compressed event to be counted",
        )
        assert worker.metrics()["warmcast_undecodable_partitions"] == 0
        assert worker.stop() == 0  # a clean shutdown
    finally:
        worker.stop()


class WorkerWithoutCramjam(Worker):
    """A worker whose Python cannot import ``cramjam`` (snappy, lz4 and zstd)."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        shim = self.workdir / "no-cramjam"
        shim.mkdir(exist_ok=True)
        (shim / "cramjam.py").write_text('raise ImportError("cramjam is not installed")\n')
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH")) if p)
        return env


async def test_a_codec_missing_here_waits_for_the_codec_and_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = namespace()
    await two_partition_topics(kafka_bootstrap, ns)
    usage_topic = topic(ns, "usage")
    snappy, plain = owned_by(0, "snappy", 4), owned_by(1, "plain", 4)
    async with AlertLog(kafka_bootstrap, topic(ns, "alerts")) as alerts:
        lacking = WorkerWithoutCramjam(
            kafka_bootstrap, tmp_path, ns, policy="fixed:10", alert_check_seconds=0.5
        ).start()
        try:
            # one plain event first: the group's commit on the partition reaches the batch
            first = owned_by(0, "first", 1)
            await produce(kafka_bootstrap, usage_topic, [event(first[0])])
            assert first[0] in await commands_for(kafka_bootstrap, ns, set(first))
            await produce_compressed(kafka_bootstrap, usage_topic, "snappy", snappy)
            subject = f"{usage_topic}/0"
            await alerts.wait(
                lambda log: firing_at(log, subject, 1) is not None, "the partition to pause", 60
            )
            alert = firing_at(alerts, subject, 1)
            assert alert is not None and alert.severity == "critical"
            assert "snappy" in alert.summary and "install" in alert.summary
            # the worker is up and its other partition goes on
            await produce(kafka_bootstrap, usage_topic, [event(m) for m in plain])
            assert set(plain) <= await commands_for(kafka_bootstrap, ns, set(plain))
            metrics = lacking.metrics()
            assert metrics["warmcast_undecodable_partitions"] == 1
            assert series(lacking, "warmcast_undecodable_batches_total", usage_topic) == 1
            assert lacking.process is not None and lacking.process.poll() is None
            assert lacking.stop() == 0  # a clean shutdown
        finally:
            lacking.stop()
        # with the codec (an ordinary install), the partition resumes at the batch; under
        # load Faust has been seen to drop the first record it fetched while recovering its
        # tables after a restart, so the resumption is judged by the batch's later records
        worker = Worker(kafka_bootstrap, tmp_path, ns, policy="fixed:10").start()
        try:
            resumed = set(snappy[1:])
            assert resumed <= await commands_for(kafka_bootstrap, ns, resumed)
            assert worker.metrics()["warmcast_undecodable_partitions"] == 0
            assert series(worker, "warmcast_undecodable_batches_total", usage_topic) == 0
            assert worker.stop() == 0  # a clean shutdown
        finally:
            worker.stop()


async def test_a_corrupt_batch_pauses_its_partition_until_skipped_to_the_dead_letters(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = namespace()
    await two_partition_topics(kafka_bootstrap, ns)
    usage_topic = topic(ns, "usage")
    # partition 0: good, bad, good, bad, ..., good; each bad batch damaged its own way
    # (those the broker refuses to store cannot reach a consumer and are left out)
    good = owned_by(0, "good", len(HARM) + 1)
    bad: list[tuple[int, int, bytes, Damage]] = []  # first offset, records, as sent, how
    await produce(kafka_bootstrap, usage_topic, [event(good[0])])
    for i, how in enumerate(HARM):
        inside = owned_by(0, f"inside{i}", 3)
        batch = damaged(record_batch([event(m)[1] for m in inside]), how)
        try:
            offset = await produce_raw(kafka_bootstrap, usage_topic, 0, batch)
        except BrokerResponseError:
            continue
        bad.append((offset, len(inside), batch, how))
        await produce(kafka_bootstrap, usage_topic, [event(good[len(bad)])])
    if not bad:
        pytest.skip("the broker refuses every damaged batch: none can reach a consumer")
    others = owned_by(1, "other", 5)
    subject = f"{usage_topic}/0"

    async with AlertLog(kafka_bootstrap, topic(ns, "alerts")) as alerts:
        worker = Worker(
            kafka_bootstrap,
            tmp_path,
            ns,
            policy="fixed:10",
            control_token=TOKEN,
            control_key=CONTROL_KEY,
            alert_check_seconds=0.5,
        ).start()
        try:
            await alerts.wait(
                lambda log: firing_at(log, subject, bad[0][0]) is not None,
                "the partition to pause on the first bad batch",
                60,
            )
            alert = firing_at(alerts, subject, bad[0][0])
            assert alert is not None and "/control/skip-batch" in alert.summary
            assert f"offsets {bad[0][0]}-{bad[0][0] + 2}" in alert.summary
            # the other partition goes on, and so does the worker
            await produce(kafka_bootstrap, usage_topic, [event(m) for m in others])
            assert set(others) | {good[0]} <= await commands_for(
                kafka_bootstrap, ns, set(others) | {good[0]}
            )
            assert worker.metrics()["warmcast_undecodable_partitions"] == 1

            # a skip that names another offset is refused, and skips nothing
            status, answer = skip(worker, {"topic": usage_topic, "partition": 0, "offset": 99})
            assert status == 409 and "paused at offset" in answer["error"]
            assert worker.metrics()["warmcast_undecodable_partitions"] == 1

            for i, (offset, records, _, _) in enumerate(bad):
                await alerts.wait(
                    lambda log, o=offset: firing_at(log, subject, o) is not None,
                    f"the partition to pause on bad batch {i}",
                    60,
                )
                status, answer = skip(
                    worker, {"topic": usage_topic, "partition": 0, "offset": offset}
                )
                assert status == 200, answer
                assert answer["skipped"] is True
                assert answer["last_offset"] == offset + records - 1
                # the partition goes on after the batch
                assert good[i + 1] in await commands_for(kafka_bootstrap, ns, {good[i + 1]})
            await alerts.wait(
                lambda log: log.states(KIND) == ["firing", "resolved"] * len(bad),
                "each pause to fire once and be resolved by its skip",
            )

            letters = await consume(
                kafka_bootstrap, [usage_topic + ".dlq"], until=lambda rs: len(rs) >= len(bad)
            )
            for letter, (offset, records, sent, how) in zip(
                sorted(letters, key=lambda r: int(dict(r.headers)["warmcast.original-offset"])),
                bad,
                strict=True,
            ):
                headers = dict(letter.headers)
                assert headers["warmcast.original-topic"] == usage_topic.encode()
                assert headers["warmcast.original-partition"] == b"0"
                assert int(headers["warmcast.original-offset"]) == offset
                assert int(headers["warmcast.original-last-offset"]) == offset + records - 1
                assert headers["warmcast.error-reason"] == b"undecodable_batch"
                assert headers["warmcast.error-class"] == HARM[how].encode()
                assert headers["warmcast.error-message"]
                assert letter.key is None
                # the batch as the broker stored it (it sets base offset and leader epoch)
                assert letter.value[16:] == sent[16:]
            assert worker.metrics()["warmcast_undecodable_partitions"] == 0
            assert series(worker, "warmcast_undecodable_batches_total", usage_topic) == len(bad)
            skipped = sum(records for _, records, _, _ in bad)
            assert series(worker, "warmcast_skipped_offsets_total", usage_topic) == skipped
            dead = series(worker, "warmcast_dead_letters_total", usage_topic, reason=KIND)
            assert dead == len(bad)
            assert worker.stop() == 0  # a clean shutdown
        finally:
            worker.stop()

        # The commit went past the skipped batches: a restarted worker meets none of them.
        again = Worker(kafka_bootstrap, tmp_path, ns, policy="fixed:10").start()
        try:
            late = owned_by(0, "late", 1)
            await produce(kafka_bootstrap, usage_topic, [event(late[0])])
            assert late[0] in await commands_for(kafka_bootstrap, ns, set(late))
            assert series(again, "warmcast_undecodable_batches_total", usage_topic) == 0
            # what the skipped batches held reached no engine (it is in the dead letters)
            seen = await commands_for(kafka_bootstrap, ns, set(late))
            assert not any(m.startswith("inside") for m in seen)
            assert again.stop() == 0  # a clean shutdown
        finally:
            again.stop()
