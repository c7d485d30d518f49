"""A Faust agent that does nothing with each message: the framework's own ceiling.

Run by ``warmcast bench`` as ``python -m tools.bench_noop`` with ``BENCH_BOOTSTRAP``,
``BENCH_TOPIC``, ``BENCH_EXPECT`` (messages) and ``BENCH_FETCH_MAX_WAIT_MS`` in the
environment. It prints one JSON line, ``{"messages": n, "first": t1, "last": t2,
"fetch_wait_tuned": bool}`` (monotonic seconds), and exits.

With ``BENCH_SINK`` (a topic with as many partitions as ``BENCH_TOPIC``) the agent relays
instead: it sends each message on, key and value, to the same partition of the sink, until
it is terminated. That is the framework's floor of event-to-command latency.

Its fetches wait as long as the worker's (``BENCH_FETCH_MAX_WAIT_MS``, the worker's
``WARMCAST_FETCH_MAX_WAIT_MS``), not Faust's 1.5 s: the consumer keeps one fetch in flight
per broker, and the embedded broker holds a fetch of drained partitions for the whole wait,
which would stall the partitions still holding data and understate the framework's rate.
It runs on the worker's event loop too (``WARMCAST_EVENT_LOOP``, uvloop when installed), and
like the worker it leaves Faust's Monitor sensor out (:mod:`streams.sensors`), so that what
the worker costs beyond it is warmcast's own work.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import faust
import orjson

from streams.loop import use_event_loop
from streams.sensors import UnmonitoredApp
from streams.workarounds import tune_consumer

app = UnmonitoredApp(
    f"bench-noop-{uuid.uuid4().hex[:8]}",
    broker=f"kafka://{os.environ.get('BENCH_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    value_serializer="raw",
    key_serializer="raw",
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.5,
    broker_rebalance_timeout=3.0,
    table_standby_replicas=0,
    datadir=os.environ.get("BENCH_DATADIR", f"/tmp/warmcast-bench-noop-{os.getpid()}"),
)
topic = app.topic(os.environ.get("BENCH_TOPIC", "bench"))
expect = int(os.environ.get("BENCH_EXPECT", "1"))
fetch_wait = int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "20"))
state = {"n": 0, "first": 0.0, "tuned": False}


@app.task
async def tune_fetches() -> None:
    """Set the consumer's fetch wait, as the worker does."""
    if tune_consumer(app, fetch_wait):
        state["tuned"] = True


sink_name = os.environ.get("BENCH_SINK")
if sink_name:
    sink = app.topic(sink_name)

    @app.agent(topic)
    async def relay(stream: faust.StreamT) -> None:
        """Send each message on as it is, to the same partition of ``BENCH_SINK``."""
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value, partition=event.message.partition)

else:

    @app.agent(topic)
    async def noop(stream: faust.StreamT) -> None:
        async for _ in stream:
            n = state["n"] = state["n"] + 1
            if n == 1:
                state["first"] = time.monotonic()
            if n >= expect:
                line = {
                    "messages": n,
                    "first": state["first"],
                    "last": time.monotonic(),
                    "fetch_wait_tuned": state["tuned"],
                }
                sys.stdout.write(orjson.dumps(line).decode() + "\n")
                sys.stdout.flush()
                os._exit(0)


if __name__ == "__main__":
    use_event_loop(os.environ.get("WARMCAST_EVENT_LOOP", "uvloop"))
    app.main()
