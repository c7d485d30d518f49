"""The backtest feeds a trace's metric events to the policy as the worker does: the load
times of the trace teach the policy's performance predictor."""

from __future__ import annotations

from pathlib import Path

import orjson

from engine.registry import make_policy
from tools.backtest import simulate
from tools.traces import MetricPoint, load_jsonl

DAY = 86_400.0


def write_trace(path: Path, load_seconds: float | None) -> Path:
    """A model used on a 47-minute timer for two days; with ``load_seconds``, a load-time
    measurement after each use."""
    lines = []
    t = 0.0
    while t < 2 * DAY:
        lines.append({"model_id": "timer", "ts": t, "count": 1})
        if load_seconds is not None:
            lines.append(
                {
                    "model_id": "timer",
                    "ts": t + 1,
                    "name": "load_time_seconds",
                    "value": load_seconds,
                }
            )
        t += 47 * 60.0
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    return path


def test_metric_lines_of_a_jsonl_trace_are_metric_events(tmp_path: Path) -> None:
    trace = load_jsonl(write_trace(tmp_path / "t.jsonl", 600.0))
    assert trace.requests == len(trace.events) > 60
    assert len(trace.metrics) == len(trace.events)
    assert trace.metrics[0] == MetricPoint(1.0, "timer", "load_time_seconds", 600.0)


def test_bad_metric_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"model_id": "m", "ts": 0, "count": 1}\n'
        b'{"model_id": "m", "ts": 1, "name": "load_time_seconds", "value": "slow"}\n'
        b'{"model_id": "m", "ts": 2, "name": "load_time_seconds", "value": true}\n'
    )
    trace = load_jsonl(path)
    assert trace.metrics == [] and trace.skipped == {"bad metric": 2}


def test_the_backtest_teaches_the_trace_load_times_to_the_policy(tmp_path: Path) -> None:
    without = load_jsonl(write_trace(tmp_path / "fast.jsonl", None))
    measured = load_jsonl(write_trace(tmp_path / "slow.jsonl", 900.0))
    _, fresh = simulate(make_policy("warmcast"), without)
    _, taught = simulate(make_policy("warmcast"), measured)
    assert taught.stats.metric_events == len(measured.metrics) > 0
    assert fresh.stats.metric_events == 0
    learned = taught.policy.performance.predict_one("timer")  # type: ignore[attr-defined]
    prior = fresh.policy.performance.predict_one("timer")  # type: ignore[attr-defined]
    assert abs(learned - 900.0) < 1.0 and abs(prior - 900.0) > 100.0
