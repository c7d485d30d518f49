"""The undecodable-batch agent called as the guarded consumer calls it: a batch that
cannot be decoded is counted once, raises its alert, and the operator's skip is checked
against where the partition is held (the producer records; no broker)."""

from __future__ import annotations

import asyncio

import orjson
from faust.types import TP

from agents.undecodable import KIND
from streams.undecodable import UndecodableBatch
from tests.agents.recording import Worker, recording_worker, settled

USAGE = "warmcast.usage.v1"


def bad(first: int = 10, last: int = 14, partition: int = 2) -> UndecodableBatch:
    return UndecodableBatch(
        USAGE, partition, first, last, "gzip", "OSError", "not a gzipped file", b"\x1f\x8bjunk"
    )


def alerts(w: Worker) -> list[dict]:
    topic = w.app.runtime.settings.topic("alerts")
    return [orjson.loads(r.value or b"") for r in w.producer.on(topic)]


async def quiet(w: Worker) -> None:
    """Wait (bounded) until the agent's spawned work is done and sent."""
    async with asyncio.timeout(30):
        while w.parts.undecodable._tasks:
            await asyncio.gather(*w.parts.undecodable._tasks, return_exceptions=True)
    await settled(w.app)


def count(w: Worker) -> float:
    return w.parts.undecodable.batches.labels(topic=USAGE)._value.get()


def test_a_found_batch_pauses_its_partition_counts_and_alerts() -> None:
    w = recording_worker(partitions=4)
    u = w.parts.undecodable

    async def go() -> None:
        u.found(bad())
        await quiet(w)

    asyncio.run(go())
    assert u.held[USAGE, 2].first_offset == 10
    assert u.partitions._value.get() == 1
    assert count(w) == 1
    [alert] = alerts(w)
    assert (alert["kind"], alert["state"], alert["subject"]) == (KIND, "firing", f"{USAGE}/2")


def test_a_batch_met_again_after_a_rebalance_is_counted_once() -> None:
    w = recording_worker(partitions=4)
    u = w.parts.undecodable

    async def go() -> None:
        u.found(bad())
        await quiet(w)
        u.revoked({TP(USAGE, 2)})
        u.found(bad())
        await quiet(w)

    asyncio.run(go())
    assert count(w) == 1
    assert (USAGE, 2) in u.held


def test_a_skip_at_another_offset_is_refused_and_the_partition_stays_held() -> None:
    w = recording_worker(partitions=4)
    u = w.parts.undecodable

    async def go() -> dict:
        u.found(bad(first=10))
        await quiet(w)
        return await u.skip(USAGE, 2, 11, "op")

    out = asyncio.run(go())
    assert "paused at offset 10, not 11" in out["error"]
    assert (USAGE, 2) in u.held
    assert (USAGE, 2, 11) not in u.skips
    assert w.producer.on(f"{USAGE}.dlq") == []


def test_a_skip_for_a_partition_not_held_here_is_remembered() -> None:
    w = recording_worker(partitions=4)
    u = w.parts.undecodable

    out = asyncio.run(u.skip(USAGE, 3, 40, "op"))
    assert out["skipped"] is False
    assert u.skips[USAGE, 3, 40] == "op"
    assert w.producer.on(f"{USAGE}.dlq") == []


def test_a_revoked_partition_that_went_elsewhere_resolves_its_alert() -> None:
    w = recording_worker(partitions=4)
    u = w.parts.undecodable

    async def go() -> None:
        u.found(bad())
        await quiet(w)
        u.revoked({TP(USAGE, 2)})
        await u.assigned({TP(USAGE, 0)})
        await settled(w.app)

    asyncio.run(go())
    assert u.held == {}
    assert u.partitions._value.get() == 0
    assert [a["state"] for a in alerts(w)] == ["firing", "resolved"]
    assert "moved to another worker" in alerts(w)[1]["summary"]


def test_a_revoked_partition_assigned_back_keeps_its_alert() -> None:
    w = recording_worker(partitions=4)
    u = w.parts.undecodable

    async def go() -> None:
        u.found(bad())
        await quiet(w)
        u.revoked({TP(USAGE, 2)})
        await u.assigned({TP(USAGE, 2)})
        await settled(w.app)

    asyncio.run(go())
    assert [a["state"] for a in alerts(w)] == ["firing"]


def test_a_disabled_alert_is_not_published_but_the_batch_is_counted() -> None:
    w = recording_worker(partitions=4, alerts_disabled=KIND)
    u = w.parts.undecodable

    async def go() -> None:
        u.found(bad())
        await quiet(w)

    asyncio.run(go())
    assert count(w) == 1
    assert alerts(w) == []
