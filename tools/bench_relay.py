"""A bare aiokafka relay: each usage message goes straight back out to the warmup topic.

The floor of event-to-command latency on a broker: the two trips an event and its command
make, through the same client library with the worker's fetch wait, and no work in
between. ``warmcast bench`` times it the way it times the worker.

Run as ``python -m tools.bench_relay`` with ``BENCH_BOOTSTRAP``, ``BENCH_TOPIC`` and
``BENCH_SINK`` (topics with the same number of partitions) and ``BENCH_FETCH_MAX_WAIT_MS``
in the environment, as the Faust relay of :mod:`tools.bench_noop` is. It reads
``BENCH_TOPIC`` from its start and hands every record, key and value, to the producer for
the same partition of ``BENCH_SINK`` as soon as a fetch brings it (no linger), until it is
terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.loop import use_event_loop


async def relay(bootstrap: str, source: str, sink: str, fetch_wait_ms: int) -> None:
    """Copy ``source`` to ``sink`` until cancelled."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_wait_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    try:
        await producer.start()
        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=1000)
                for tp, records in fetched.items():
                    for r in records:  # handed over at once; delivery is not awaited
                        await producer.send(sink, r.value, key=r.key, partition=tp.partition)
        finally:
            await producer.stop()
    finally:
        await consumer.stop()


async def main() -> None:
    task = asyncio.ensure_future(
        relay(
            os.environ["BENCH_BOOTSTRAP"],
            os.environ["BENCH_TOPIC"],
            os.environ["BENCH_SINK"],
            int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "20")),
        )
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):  # terminated: a clean exit
        await task


if __name__ == "__main__":
    use_event_loop(os.environ.get("WARMCAST_EVENT_LOOP", "uvloop"))
    asyncio.run(main())
