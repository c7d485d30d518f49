"""Records larger than the producer may send: dead letters truncated, forwards split, and
the worker goes on (no agent restart, no lost event, a bounded shutdown)."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.kafka import allow_larger_records
from streams.partitioning import partition_for
from streams.settings import WarmcastSettings
from tests.integration.harness import Worker, consume, namespace, produce, topic, usage, wait_for
from tests.integration.test_worker import two_partition_topics

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0  # the start of a minute, far enough in the past to be a replay
LIMIT = 1_000_000  # the worker's producer request limit (Faust's producer_max_request_size)
BIG_PRODUCER = {"max_request_size": 8 << 20}
BIG_CONSUMER = {"max_partition_fetch_bytes": 8 << 20, "fetch_max_bytes": 64 << 20}
#: The worker's shutdown bound, and how long a test waits for SIGTERM to end it.
SHUTDOWN_SECONDS = 20
STOP_WAIT = 90.0


def owned(prefix: str, partition: int, n: int) -> list[str]:
    """``n`` model ids that the usage partition ``partition`` (of 2) owns."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        if partition_for(f"{prefix}-{i}", 2) == partition:
            out.append(f"{prefix}-{i}")
        i += 1
    return out


def record_size(record: Any) -> int:
    """What the producer counts against its request limit for this record."""
    headers = [(k, v) for k, v in record.headers]
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, headers))


def metric(model_id: str, ts: float) -> bytes:
    return orjson.dumps({"model_id": model_id, "ts": ts, "name": "load_time_seconds", "value": 9})


def a_worker(bootstrap: str, tmp_path: Path, ns: str) -> Worker:
    """A worker that takes the whole backlog in one batch."""
    return Worker(
        bootstrap,
        tmp_path,
        ns,
        policy="fixed:10",
        usage_batch_messages=1000,
        usage_batch_bytes=64 << 20,
        usage_batch_seconds=2,
        usage_catchup_batch_seconds=2,
        max_envelope_events=50_000,
        shutdown_timeout_seconds=SHUTDOWN_SECONDS,
    )


def bad_message(case: str, key_model: str) -> tuple[str, bytes, str | None]:
    """(input, the message, the reason of its dead letter; ``None``: no dead letter)."""
    if case == "malformed":  # under max_message_bytes: dead-lettered whole, over the limit
        return "usage", b"{not json " + b"x" * 1_020_000, "malformed_json"
    if case == "schema":
        body = {"model_id": key_model, "ts": "yesterday", "node": "n", "pad": "y" * 1_020_000}
        return "usage", orjson.dumps(body), "schema_violation"
    if case == "metric":  # over max_message_bytes: cut to it, still over the limit
        return "metrics", b'{"model_id": "m", "pad": "' + b"z" * 1_100_000 + b'"}', "oversize"
    # an envelope on partition 0 of events owned by partition 1: forwarded, it re-serialises
    # (with "count" and float times) well above the limit
    foreign = owned("fwd", 1, 20)
    events = [{"model_id": foreign[i % 20], "ts": int(T0) + i % 50} for i in range(26_000)]
    return "usage", orjson.dumps(events), None


@pytest.mark.parametrize("case", ["malformed", "schema", "metric", "forward"])
async def test_an_oversize_record_does_not_stop_the_worker_nor_lose_its_batch(
    case: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns, bootstrap = namespace(), kafka_bootstrap
    await two_partition_topics(bootstrap, ns)
    # the inputs take records larger than the worker's own bound (Kafka's default is 1 MiB)
    settings = WarmcastSettings(kafka_bootstrap_servers=bootstrap, topic_namespace=ns)
    await allow_larger_records(settings, ("usage", "metrics"), 8 << 20)
    first = owned("a", 0, 6) + owned("b", 1, 6)  # good events around the bad one
    key_model = owned("k", 0, 1)[0]
    where, bad, reason = bad_message(case, key_model)
    around = [(m.encode(), orjson.dumps(usage(m, T0))) for m in first]
    metrics_around = [(m.encode(), metric(m, T0)) for m in first]
    if where == "usage":
        await produce(bootstrap, topic(ns, "usage"), around[:6], **BIG_PRODUCER)
        await produce(bootstrap, topic(ns, "usage"), [(key_model.encode(), bad)], **BIG_PRODUCER)
        await produce(bootstrap, topic(ns, "usage"), around[6:], **BIG_PRODUCER)
    else:
        await produce(bootstrap, topic(ns, "usage"), around)
        await produce(bootstrap, topic(ns, "metrics"), metrics_around[:6])
        await produce(bootstrap, topic(ns, "metrics"), [(b"m", bad)], **BIG_PRODUCER)
        await produce(bootstrap, topic(ns, "metrics"), metrics_around[6:])
    worker = a_worker(bootstrap, tmp_path, ns).start()
    try:
        expected = set(first) | (set(owned("fwd", 1, 20)) if case == "forward" else set())
        commands = await consume(
            bootstrap,
            [topic(ns, "warmup")],
            until=lambda rs: {orjson.loads(r.value)["model_id"] for r in rs} >= expected,
            timeout=90,
        )
        assert {orjson.loads(r.value)["model_id"] for r in commands} == expected
        if case == "metric":
            wait_for(
                lambda: (
                    worker.metrics().get('warmcast_metric_events_total{name="load_time_seconds"}')
                    == len(first)
                ),
                60,
                "every good metric event to be counted",
            )
        if reason is not None:
            letters = await consume(
                bootstrap,
                [topic(ns, where) + ".dlq"],
                until=lambda rs: len(rs) >= 1,
                timeout=60,
                **BIG_CONSUMER,
            )
            assert len(letters) == 1
            letter = letters[0]
            headers = dict(letter.headers)
            assert headers["warmcast.error-reason"] == reason.encode()
            assert headers["warmcast.truncated"] == b"true"
            assert int(headers["warmcast.original-size"]) == len(bad)
            assert headers["warmcast.original-sha256"] == hashlib.sha256(bad).hexdigest().encode()
            assert 0 < len(letter.value) < len(bad) and bad.startswith(letter.value)
            assert record_size(letter) <= LIMIT
        else:
            forwarded = await consume(
                bootstrap,
                [topic(ns, "usage")],
                until=lambda rs: sum(len(orjson.loads(r.value)) for r in rs if r.headers) >= 26_000,
                timeout=60,
                **BIG_CONSUMER,
            )
            pieces = [r for r in forwarded if dict(r.headers).get("warmcast.forwarded")]
            assert len(pieces) >= 2
            assert all(record_size(r) <= LIMIT and r.partition == 1 for r in pieces)
            assert sum(len(orjson.loads(r.value)) for r in pieces) == 26_000

        # still at work: a later event gets its command
        await produce(bootstrap, topic(ns, "usage"), [(b"later", orjson.dumps(usage("later", T0)))])
        await consume(
            bootstrap,
            [topic(ns, "warmup")],
            until=lambda rs: any(orjson.loads(r.value)["model_id"] == "later" for r in rs),
            timeout=60,
        )
        log = worker.log.read_text()
        assert "MessageSizeTooLarge" not in log
        assert "Traceback" not in log
    finally:
        code = worker.stop(timeout=STOP_WAIT)
    assert code != -signal.SIGKILL, "SIGTERM did not end the worker"
