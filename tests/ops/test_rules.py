"""The Prometheus rules of the worker's own reliability checks say what the worker says:
same metric, same threshold, same ``for`` and keep-firing time, same severity, with the
settings' defaults. (That every metric they name is exposed by a running worker is
checked in tests/integration/test_ops_checks.py.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import WarmcastSettings
from tests.ops.promql import metric_names

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = WarmcastSettings()


def duration(text: str | None) -> float:
    """Seconds of a Prometheus duration (``30s``, ``1m``, ``1h30m``; none: 0)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text or "")
    assert "".join(n + u for n, u in parts) == (text or ""), text
    return sum(int(n) * units[u] for n, u in parts)


def hostile_reasons() -> set[str]:
    """The refusals the worker's ``checkpoint_rejected`` check counts (agents/recovery.py)."""
    tree = ast.parse((REPO / "agents/recovery.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "HOSTILE":
            return set(ast.literal_eval(node.value))
    raise AssertionError("agents/recovery.py has no HOSTILE")


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((REPO / "ops/prometheus/alerts.yml").read_text())
    (group,) = [g for g in doc["groups"] if g["name"] == "warmcast-reliability"]
    return {r["alert"]: r for r in group["rules"]}


def threshold(expr: str) -> float:
    (value,) = re.findall(r">\s*([0-9.]+)\s*$", expr.strip())
    return float(value)


def test_consumer_lag(rules: dict[str, dict[str, Any]]) -> None:
    rule = rules["WarmcastConsumerLag"]
    assert metric_names(rule["expr"]) == {"warmcast_consumer_lag_messages"}
    assert threshold(rule["expr"]) == DEFAULTS.max_consumer_lag
    assert duration(rule.get("for")) == DEFAULTS.alert_for_seconds
    assert duration(rule["keep_firing_for"]) == DEFAULTS.alert_keep_firing_seconds
    assert rule["labels"]["severity"] == "warning"


def test_broker_unreachable(rules: dict[str, dict[str, Any]]) -> None:
    """No answer for longer than the stall bound, counted from the worker's start until
    its first answer (as the worker counts it); no ``for``, as the worker's check."""
    rule = rules["WarmcastBrokerUnreachable"]
    assert metric_names(rule["expr"]) == {
        "warmcast_broker_last_response_timestamp_seconds",
        "process_start_time_seconds",
    }
    assert threshold(rule["expr"]) == DEFAULTS.broker_stall_seconds
    assert duration(rule.get("for")) == 0
    assert duration(rule["keep_firing_for"]) == DEFAULTS.alert_keep_firing_seconds
    assert rule["labels"]["severity"] == "critical"


def test_checkpoint_rejected(rules: dict[str, dict[str, Any]]) -> None:
    rule = rules["WarmcastCheckpointRejected"]
    assert metric_names(rule["expr"]) == {"warmcast_checkpoints_rejected_total"}
    (reasons,) = re.findall(r'reason=~"([^"]+)"', rule["expr"])
    assert set(reasons.split("|")) == hostile_reasons()
    window = duration(re.findall(r"\[(\w+)\]", rule["expr"])[0])
    assert window == max(DEFAULTS.dead_letter_window_seconds, 60.0)
    assert threshold(rule["expr"]) == 0
    assert duration(rule.get("for")) == 0
    assert rule["labels"]["severity"] == "critical"


def test_every_reliability_check_of_the_worker_has_a_rule(
    rules: dict[str, dict[str, Any]],
) -> None:
    tree = ast.parse((REPO / "agents/recovery.py").read_text())
    kinds = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ALERT_KINDS"
    )
    named = {"".join(w.title() for w in kind.split("_")) for kind in kinds}
    assert {f"Warmcast{name}" for name in named} <= set(rules)
