"""``warmcast demo`` end to end on a few minutes of the shipped sample."""

from __future__ import annotations

import io
import re
from pathlib import Path

import orjson
import pytest

from streams.broker import free_port
from tools.demo import SAMPLE, SAMPLE_MEMORY, DemoOptions, default_policy, run_demo
from tools.traces import load_trace, read_sizes

pytestmark = pytest.mark.integration


def test_shipped_sample_is_small_attributed_and_complete() -> None:
    assert SAMPLE.stat().st_size < 1 << 20
    trace = load_trace(SAMPLE)
    assert trace.models == 150 and trace.end_minute == 239
    assert set(read_sizes(SAMPLE_MEMORY)) == {model for _, model, _ in trace.events}
    readme = (SAMPLE.parent / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Shahrad" in readme


def test_default_policy_says_which_and_why() -> None:
    policy, why = default_policy()
    assert policy in ("warmcast", "hybrid")
    assert why


def test_demo_prints_results_alerts_and_where_to_look(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = io.StringIO()
    options = DemoOptions(
        policy="hybrid",
        minutes=6,
        out=tmp_path / "demo",
        web_port=free_port(),
        bootstrap=kafka_bootstrap,
        load_time=20.0,
    )
    result = run_demo(options, out)
    text = out.getvalue()
    assert result.agrees and result.cold_diff_pct == 0.0
    assert result.report.fleet.cold_starts == result.backtest.cold_starts > 0
    for line in (
        "warmcast worker (hybrid/1)",
        "fixed keep-alive 10 min",
        "warmcast backtest, hybrid",
        "streaming vs backtest (hybrid): cold starts +0.00 %",
        "alerts raised",
        "/health",
        "/metrics",
        "cold_starts.png",
    ):
        assert line in text
    assert (tmp_path / "demo" / "cold_starts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = orjson.loads((tmp_path / "demo" / "report.json").read_bytes())
    assert report["fleet_sim"]["fleet"]["cold_starts"] == report["backtest"]["cold_starts"]


def test_demo_on_a_real_mlserver_reports_measured_load_times(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from tools.demo import run_selected
    from tools.demo_executor import DEFAULT_LOAD_SECONDS
    from tools.mlserver import MLServerUnavailable, ensure_venv

    try:
        ensure_venv()
    except MLServerUnavailable as exc:
        if exc.offline:
            pytest.skip(f"PyPI is unreachable: MLServer cannot be installed ({exc})")
        raise
    out = io.StringIO()
    options = DemoOptions(
        policy="hybrid",
        minutes=3,
        out=tmp_path / "demo",
        web_port=free_port(),
        bootstrap=kafka_bootstrap,
        load_time=20.0,
        executor="mlserver",
    )
    run_selected(options, out)
    text = out.getvalue()
    assert "warmcast backtest, hybrid" in text  # the table as without an executor
    found = re.search(
        r"measured load times of (\d+) loads done: p50 ([\d.]+)s, p99 ([\d.]+)s", text
    )
    assert found, text[-2000:]
    loads, p50, p99 = int(found[1]), float(found[2]), float(found[3])
    assert loads > 0
    assert DEFAULT_LOAD_SECONDS <= p50 <= p99
