"""``warmcast replay`` and ``warmcast tail`` against a real broker."""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.kafka import ensure_topics
from streams.partitioning import partition_for
from tests.integration.harness import consume, namespace, produce, topic
from tools import replay, tail
from tools.replay import publish, read_events, settings_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_040.0
MODELS = [f"model-{i}" for i in range(9)]


def log_file(path: Path) -> Path:
    lines = [
        orjson.dumps({"model_id": MODELS[i % 9], "ts": T0 + i, "count": 1 + i % 3})
        for i in range(60)
    ]
    lines.insert(10, b'{"model_id": "model-1", "ts": 1700000049.5, "latency": 0.25}')
    lines.insert(20, orjson.dumps({"model_id": "model-2", "ts": T0 + 18, "name": "x", "value": 1}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def parse(argv: list[str], register: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    return parser.parse_args(argv)


async def read_all(bootstrap: str, name: str, count: int) -> list[Any]:
    records = await consume(bootstrap, [name], until=lambda r: len(r) >= count, timeout=30)
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def test_single_events_round_trip_keys_values_timestamps(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = namespace()
    events = read_events([log_file(tmp_path / "usage.jsonl")])
    summary = await publish(events.records, settings_for(kafka_bootstrap, ns))
    assert (summary.usage_events, summary.metric_events, summary.messages) == (61, 1, 62)

    usage = await read_all(kafka_bootstrap, topic(ns, "usage"), 61)
    partitions = settings_for(kafka_bootstrap, ns).partitions
    expected = sorted(
        (partition_for(key, partitions), key, value, round(ts * 1000))
        for ts, kind, key, value in events.records
        if kind == "usage"
    )
    got = sorted((r.partition, r.key.decode(), r.value, r.timestamp) for r in usage)
    assert got == expected
    for p in range(partitions):  # each partition in file order
        in_file = [v for ts, kind, key, v in events.records if kind == "usage" and
                   partition_for(key, partitions) == p]  # fmt: skip
        assert [r.value for r in usage if r.partition == p] == in_file

    metrics = await read_all(kafka_bootstrap, topic(ns, "metrics"), 1)
    assert [(r.key, orjson.loads(r.value)["name"], r.timestamp) for r in metrics] == [
        (b"model-2", "x", round((T0 + 18) * 1000))
    ]


async def test_envelopes_go_to_the_partition_owning_their_models(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = namespace()
    events = read_events([log_file(tmp_path / "usage.jsonl")])
    usage_records = [r for r in events.records if r[1] == "usage"]
    summary = await publish(usage_records, settings_for(kafka_bootstrap, ns), envelope=4)
    messages = await read_all(kafka_bootstrap, topic(ns, "usage"), summary.messages)
    assert len(messages) == summary.messages < 61
    partitions = settings_for(kafka_bootstrap, ns).partitions
    for record in messages:
        envelope = orjson.loads(record.value)
        assert 1 <= len(envelope) <= 4
        assert {partition_for(e["model_id"], partitions) for e in envelope} == {record.partition}
        assert record.key == envelope[0]["model_id"].encode()
        assert record.timestamp == round(envelope[0]["ts"] * 1000)
    for p in range(partitions):
        unpacked = [e for r in messages if r.partition == p for e in orjson.loads(r.value)]
        in_file = [orjson.loads(v) for _, _, key, v in usage_records
                   if partition_for(key, partitions) == p]  # fmt: skip
        assert unpacked == in_file


async def test_speed_paces_event_time(kafka_bootstrap: str) -> None:
    ns = namespace()
    settings = settings_for(kafka_bootstrap, ns)
    warmup = [(T0, "usage", "m", b'{"model_id": "m", "ts": 1700000040}')]
    await publish(warmup, settings)  # topics created and metadata warm before timing
    records = [
        (T0 + t, "usage", "m", orjson.dumps({"model_id": "m", "ts": T0 + t}))
        for t in range(0, 121, 10)
    ]
    started = time.monotonic()
    summary = await publish(records, settings, speed=60.0)
    elapsed = time.monotonic() - started
    assert summary.events == 13
    assert 1.8 <= summary.seconds <= 3.5  # 120 event-seconds at 60x: 2 s
    assert elapsed <= 5.0


def test_cli_publishes_reports_bad_lines_and_exits_0(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = namespace()
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"model_id": "a", "ts": 1700000040}\n{broken\n{"model_id": "b", "ts": 60}\n')
    out = io.StringIO()
    args = parse(
        ["replay", str(path), "--bootstrap", kafka_bootstrap, "--namespace", ns], replay.register
    )
    assert replay.command(args, out) == replay.EXIT_OK
    assert out.getvalue().startswith("published 2 events")
    assert out.getvalue().rstrip().endswith("1 bad lines")
    assert f"{path}:2: malformed JSON" in capsys.readouterr().err
    records = asyncio.run(read_all(kafka_bootstrap, topic(ns, "usage"), 2))
    assert sorted(r.key for r in records) == [b"a", b"b"]


def test_tail_prints_json_lines_and_columns(kafka_bootstrap: str) -> None:
    ns = namespace()
    commands: list[dict[str, Any]] = [
        {
            "command_id": f"c{i}",
            "model_id": f"m{i}",
            "action": "warm",
            "issued_at": T0,
            "start": T0 + 60,
            "end": T0 + 660,
            "priority": 2,
            "reason": "keep-alive 10 min",
            "policy_version": "fixed-10/1",
        }
        for i in range(3)
    ]
    asyncio.run(ensure_topics(settings_for(kafka_bootstrap, ns)))
    messages = [(c["model_id"].encode(), orjson.dumps(c)) for c in commands]
    asyncio.run(produce(kafka_bootstrap, topic(ns, "warmup"), messages))
    common = ["--from-beginning", "--bootstrap", kafka_bootstrap, "--namespace", ns]
    out = io.StringIO()
    args = parse(["tail", "warmup", "--limit", "3", "--timeout", "20", *common], tail.register)
    assert tail.command(args, out) == 0
    assert sorted(orjson.loads(line)["command_id"] for line in out.getvalue().splitlines()) == [
        "c0",
        "c1",
        "c2",
    ]
    out = io.StringIO()
    args = parse(["tail", "warmup", "--pretty", "--timeout", "2", *common], tail.register)
    assert tail.command(args, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["issued_at", "model_id", "action"]
    assert len(lines) == 4
    assert all("fixed-10/1" in line and " 10 " in line for line in lines[1:])
