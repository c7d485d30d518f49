"""``warmcast replay`` without a broker: reading, merging, bad lines, routing, exit codes."""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import orjson
import pytest

from streams.partitioning import partition_for
from tools import replay
from tools.replay import (
    EXIT_BAD_LINES,
    EXIT_ERROR,
    EXIT_OK,
    METRICS,
    USAGE,
    BatchSender,
    Pacer,
    TopicRoute,
    read_events,
    select,
)

T0 = 1_700_000_040.0


def jsonl(path: Path, lines: list[object], *, gz: bool = False) -> Path:
    text = b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
    )
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    replay.register(sub)
    return parser.parse_args(["replay", *argv])


def test_jsonl_keeps_each_line_as_written_and_tells_usage_from_metric(tmp_path: Path) -> None:
    usage = b'{"model_id": "llama", "ts": 1700000040.5, "cold_start": true, "latency": 3.25}'
    metric = {"model_id": "llama", "ts": T0, "name": "load_time_seconds", "value": 21.5}
    node = {"node_id": "gpu-1", "ts": T0 + 1, "name": "memory_bytes", "value": 8e9}
    events = read_events([jsonl(tmp_path / "a.jsonl.gz", [usage, metric, node], gz=True)])
    assert [(r[1], r[2]) for r in events.records] == [
        (METRICS, "llama"),
        (USAGE, "llama"),
        (METRICS, "gpu-1"),
    ]
    assert events.records[1][3] == usage
    assert not events.bad


def test_bad_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "log.jsonl",
        [
            {"model_id": "a", "ts": T0},
            b"{not json",
            {"model_id": "", "ts": T0},
            b"[1, 2]",
            {"model_id": "a", "ts": "yesterday"},
            {"model_id": "a", "ts": T0 + 1},
        ],
    )
    events = read_events([path])
    assert [str(b).split(": ")[0] for b in events.bad] == [
        f"{path}:2",
        f"{path}:3",
        f"{path}:4",
        f"{path}:5",
    ]
    assert "malformed JSON" in str(events.bad[0])
    assert "schema violation" in str(events.bad[1])
    assert events.bad_count == 4
    assert len(events.records) == 2


def test_files_merge_in_event_time_order_stably(tmp_path: Path) -> None:
    a = jsonl(tmp_path / "a.jsonl", [{"model_id": "a", "ts": T0 + t} for t in (0, 20, 40)])
    b = jsonl(tmp_path / "b.jsonl", [{"model_id": "b", "ts": T0 + t} for t in (10, 20, 30)])
    events = read_events([a, b])
    assert [(r[0] - T0, r[2]) for r in events.records] == [
        (0, "a"),
        (10, "b"),
        (20, "a"),
        (20, "b"),
        (30, "b"),
        (40, "a"),
    ]
    assert [r[0] - T0 for r in select(events.records, start=T0 + 10, end=T0 + 40, limit=3)] == [
        10,
        20,
        20,
    ]


def test_azure_and_csv_become_usage_events_with_counts(tmp_path: Path) -> None:
    azure = tmp_path / "inv.csv"
    azure.write_text(
        "HashFunction,HashApp,HashOwner,minute_1,minute_2\nf1,a1,o1,2,0\nf2,a2,o2,0,3\n"
    )
    requests = tmp_path / "req.csv"
    requests.write_text("ts,model\n2023-11-14T22:14:10Z,m\nnot-a-time,m\n")
    events = read_events([azure, requests], t0=T0)
    decoded = [orjson.loads(r[3]) for r in events.records]
    assert decoded == [
        {"model_id": "f1", "ts": T0, "count": 2},
        {"model_id": "m", "ts": T0 + 10, "count": 1},
        {"model_id": "f2", "ts": T0 + 60, "count": 3},
    ]
    assert [str(b) for b in events.bad] == [f"{requests}: 1 rows skipped: bad time"]


def test_envelopes_group_events_by_owning_partition() -> None:
    routes = {USAGE: TopicRoute("u", 4), METRICS: TopicRoute("m", 4)}
    sender = BatchSender(None, routes, envelope=3)
    models = [f"model-{i}" for i in range(20)]
    for i, model in enumerate(models):
        sender.add(USAGE, model, orjson.dumps({"model_id": model, "ts": T0 + i}), T0 + i)
    # what stays pending is per partition, and every envelope holds one partition's models
    pending = {p: [k for k, _, _ in v] for (_, p), v in sender._pending.items()}
    for partition, keys in pending.items():
        assert all(partition_for(k, 4) == partition for k in keys)
    assert sender.messages == sum(
        n // 3 for n in (sum(partition_for(m, 4) == p for m in models) for p in range(4))
    )


def test_pacer_maps_event_time_to_wall_time() -> None:
    now = [50.0]
    pacer = Pacer(60.0, clock=lambda: now[0])
    assert pacer.delay(T0) == 0.0
    assert pacer.delay(T0 + 120) == pytest.approx(2.0)
    now[0] = 51.5
    assert pacer.delay(T0 + 120) == pytest.approx(0.5)
    assert pacer.delay(T0 + 30) == 0.0  # already late: no wait
    with pytest.raises(ValueError):
        Pacer(0.0)


def test_cli_dry_run_counts_and_strict_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = jsonl(tmp_path / "x.jsonl", [{"model_id": "a", "ts": T0}, b"oops"])
    out = io.StringIO()
    assert replay.command(parse([str(path), "--dry-run", "--envelope", "10"]), out) == EXIT_OK
    assert out.getvalue().startswith("would publish 1 events")
    assert "1 bad lines" in out.getvalue()
    assert f"{path}:2: malformed JSON" in capsys.readouterr().err
    out = io.StringIO()
    assert replay.command(parse([str(path), "--strict", "--dry-run"]), out) == EXIT_BAD_LINES
    assert out.getvalue() == ""
    assert "nothing published" in capsys.readouterr().err


def test_cli_io_and_broker_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert replay.command(parse([str(tmp_path / "missing.jsonl"), "--dry-run"])) == EXIT_ERROR
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("WARMCAST_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    path = jsonl(tmp_path / "x.jsonl", [{"model_id": "a", "ts": T0}])
    assert replay.command(parse([str(path)])) == EXIT_ERROR
    assert "no broker" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage_error:
        parse([str(path), "--speed", "0"])
    assert usage_error.value.code == EXIT_ERROR


def test_help_documents_the_exit_codes() -> None:
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command")
    text = replay.register(sub).format_help()
    for line in ("0  every event", "1  --strict", "2  usage error"):
        assert line in text


def test_azure_without_t0_is_placed_at_1970_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    azure = tmp_path / "inv.csv"
    azure.write_text("HashFunction,HashApp,HashOwner,minute_1\nf1,a1,o1,2\n")
    out = io.StringIO()
    assert replay.command(parse([str(azure), "--dry-run"]), out) == EXIT_OK
    assert "1970-01-01T00:00:00Z .. 1970-01-01T00:00:00Z" in out.getvalue()
    assert "carry no dates" in capsys.readouterr().err
    assert replay.command(parse([str(azure), "--dry-run", "--t0", "2019-07-15T08:00:00Z"])) == 0
    assert "carry no dates" not in capsys.readouterr().err
