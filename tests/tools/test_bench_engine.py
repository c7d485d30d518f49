"""The bench's in-process row: the worker's usage step on the bench's messages, no Kafka."""

from __future__ import annotations

from collections import defaultdict

import orjson

from engine.core import WarmupEngine
from engine.registry import make_policy
from streams.settings import WarmcastSettings
from tools.bench_engine import run_engine
from tools.bench_worker import default_trace, event_mix, messages


def test_the_in_process_run_makes_the_decisions_of_an_engine_per_partition() -> None:
    events = event_mix(default_trace(), 3_000)
    settings = WarmcastSettings(partitions=4, policy="hybrid")
    msgs = list(messages(events, 4, 100))

    run = run_engine(msgs, settings)

    engines: dict[int, WarmupEngine] = defaultdict(lambda: WarmupEngine(make_policy("hybrid")))
    expected = 0
    for partition, _, value, _ in msgs:
        for e in orjson.loads(value):
            expected += len(engines[partition].observe(e["model_id"], e["ts"], e["count"]))
    assert (run.messages, run.events) == (len(msgs), 3_000)
    assert run.commands == expected > 0
    assert run.seconds > 0 and run.events_per_second == run.events / run.seconds


def test_events_the_worker_would_dead_letter_are_not_counted() -> None:
    good = [{"model_id": f"m{i}", "ts": 60.0 * i} for i in range(5)]
    bad = {"model_id": "", "ts": 60.0}  # empty id: a schema violation
    msgs = [(0, b"m0", orjson.dumps([*good, bad]), 6), (0, b"x", b"not json", 1)]

    run = run_engine(msgs, WarmcastSettings(partitions=1))

    assert (run.messages, run.events) == (2, 5)
    assert run.commands >= 5  # each new model gets a lease
