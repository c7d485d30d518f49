"""The loop closed: a worker decides, the fleet simulator executes, and the streaming path
takes the decisions the backtest takes on the same slice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.harness import Worker, namespace
from tools.backtest import run_backtest
from tools.demo import SAMPLE, SAMPLE_T0
from tools.fleet import FixedLoadTime
from tools.fleetsim import FleetSim, load_slice
from tools.replay import settings_for

pytestmark = pytest.mark.integration


def test_fleet_sim_agrees_with_the_backtest(kafka_bootstrap: str, tmp_path: Path) -> None:
    trace = load_slice(str(SAMPLE), t0=SAMPLE_T0, start=SAMPLE_T0 + 3600, minutes=16)
    worker = Worker(kafka_bootstrap, tmp_path, namespace(), policy="hybrid").start()
    try:
        sim = FleetSim(
            settings_for(kafka_bootstrap, worker.namespace),
            trace,
            load_times=FixedLoadTime(25.0),
            worker_urls=[f"http://127.0.0.1:{worker.port}"],
            progress=False,
        )
        report = asyncio.run(sim.run())
        metrics = worker.metrics()
    finally:
        worker.stop()

    result = run_backtest(trace, ["hybrid"], progress=False)
    offline, fixed = result.run("hybrid"), result.reference
    assert report.minutes == 16 and report.fleet.requests == offline.score.requests > 0
    assert abs(report.fleet.cold_starts - offline.score.cold_starts) <= 0.02 * max(
        offline.score.cold_starts, 1
    )
    # hybrid decides each model on its own history: the two paths agree exactly
    assert report.fleet.cold_starts == offline.score.cold_starts
    assert report.fleet.wasted_minutes == offline.score.wasted_minutes
    assert report.commands == offline.commands
    assert report.policy_versions == ["hybrid/1"]
    assert (report.late_commands, report.flag_mismatches) == (0, 0)
    assert (report.baseline.cold_starts, report.baseline.wasted_minutes) == (
        fixed.score.cold_starts,
        fixed.score.wasted_minutes,
    )
    # what the fleet published reached the worker: usage flagged cold, load times
    assert metrics["warmcast_usage_events_total"] == report.usage_events == len(trace.events)
    assert metrics["warmcast_cold_starts_total"] == report.fleet.cold_starts
    loads = sum(v for k, v in metrics.items() if k.startswith("warmcast_metric_events_total"))
    assert loads == report.metric_events > 0
