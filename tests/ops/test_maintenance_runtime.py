"""Maintenance windows in the worker's runtime (no broker): the same commands as the
backtest under the same window, candidates under it too, alerts marked and paired."""

from __future__ import annotations

from pathlib import Path

from engine.alerting import AlertTransition, fingerprint
from engine.registry import make_policy
from schemas.usage import UsageEvent
from streams.publishers import alert_record
from streams.runtime import Runtime
from streams.settings import WarmcastSettings
from tools.backtest import simulate
from tools.traces import load_trace

SAMPLE = Path(__file__).resolve().parents[2] / "tools" / "samples" / "azure2019_150fn_4h.csv.gz"
WINDOW = "from=1970-01-01T02:00Z,until=1970-01-01T02:30Z,models=[0-7]*,id=half"


def test_the_worker_holds_what_the_backtest_holds() -> None:
    trace = load_trace(SAMPLE)
    rt = Runtime(
        WarmcastSettings(
            policy="hybrid", maintenance=WINDOW, shadow_policies="fixed:10", partitions=1
        )
    )
    issued = []
    batch: list[UsageEvent] = []
    for ts, model_id, count in trace.events:
        batch.append(UsageEvent(model_id=model_id, ts=ts, count=count))
        if len(batch) == 100:
            issued += rt.apply_usage(0, batch, lambda m: None, 0.0)[0]
            batch = []
    issued += rt.apply_usage(0, batch, lambda m: None, 0.0)[0]
    expected, engine = simulate(make_policy("hybrid"), trace, maintenance=rt.maintenance)
    assert engine.stats.maintenance_held > 0
    assert len(issued) > 0.99 * len(expected)
    assert issued == expected[: len(issued)]  # the backtest's last advance aside
    step = rt.steps[0]
    assert step.engine.stats.maintenance_held == engine.stats.maintenance_held
    assert step.shadows is not None
    assert all(e.maintenance is not None for e in step.shadows.engines.values())


def anomaly(model_id: str, state: str, ts: float) -> AlertTransition:
    subject = f"{model_id}/load_time"
    return AlertTransition(
        fingerprint("metric_anomaly", subject),
        "metric_anomaly",
        "warning",
        "firing" if state == "firing" else "resolved",
        subject,
        "",
        300.0,
        4.0,
        ts,
    )


def test_alerts_of_the_pool_in_the_window_are_marked_and_so_is_their_resolve() -> None:
    rt = Runtime(WarmcastSettings(maintenance=WINDOW))
    inside, after = 2 * 3600 + 60.0, 4 * 3600.0
    assert rt.mark_maintenance(anomaly("0abc", "firing", inside)) == "half"
    assert rt.mark_maintenance(anomaly("fabc", "firing", inside)) is None  # not in the pool
    assert rt.mark_maintenance(anomaly("1abc", "firing", after)) is None  # after the window
    assert rt.mark_maintenance(anomaly("0abc", "resolved", after)) == "half"  # its pair
    record = alert_record(anomaly("0abc", "firing", inside), "half")
    assert (record["maintenance"], record["maintenance_window"]) == (True, "half")
    health = AlertTransition(
        fingerprint("health_degraded", "warmcast"),
        "health_degraded",
        "warning",
        "firing",
        "warmcast",
        "",
        0.5,
        0.8,
        inside,
    )
    assert rt.mark_maintenance(health) is None  # a window of a pool: the worker's checks page
    everything = Runtime(WarmcastSettings(maintenance="from=0,until=99999,id=all"))
    assert everything.mark_maintenance(health) == "all"
