"""A Faust agent that does nothing with each message: the framework's own ceiling.

Run by ``warmcast bench`` as ``python -m tools.bench_noop`` with ``BENCH_BOOTSTRAP``,
``BENCH_TOPIC`` and ``BENCH_EXPECT`` (messages) in the environment. It prints one JSON
line, ``{"messages": n, "first": t1, "last": t2}`` (monotonic seconds), and exits.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import faust
import orjson

app = faust.App(
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
state = {"n": 0, "first": 0.0}


@app.agent(topic)
async def noop(stream: faust.StreamT) -> None:
    async for _ in stream:
        n = state["n"] = state["n"] + 1
        if n == 1:
            state["first"] = time.monotonic()
        if n >= expect:
            line = {"messages": n, "first": state["first"], "last": time.monotonic()}
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
            sys.stdout.flush()
            os._exit(0)


if __name__ == "__main__":
    app.main()
