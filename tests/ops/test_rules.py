"""The Prometheus rules of the worker's checks say what the worker says: same metric, same
threshold and comparison, same window, and for the worker's own reliability checks the
same ``for`` and keep-firing time and severity, with the settings' defaults. (That every
metric they name is exposed by a running worker is checked in
tests/integration/test_ops_checks.py; that each fires at its threshold and not under it,
by promtool in tests/ops/test_promtool.py.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.runtime import FORWARDED_MIN_EVENTS
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


def load_rules(group: str | None = None) -> dict[str, dict[str, Any]]:
    """The alerting rules of alerts.yml by name (of one group, or of all)."""
    doc = yaml.safe_load((REPO / "ops/prometheus/alerts.yml").read_text())
    groups = [g for g in doc["groups"] if group in (None, g["name"])]
    assert groups, group
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    return load_rules("warmcast-reliability")


def threshold(expr: str) -> float:
    (value,) = re.findall(r">\s*([0-9.]+)\s*$", expr.strip())
    return float(value)


def comparisons(expr: str) -> set[tuple[str, float]]:
    """Each comparison of the expression with a number.

    >>> sorted(comparisons('a{x!="1"} >= 0.99 or b < 7 and c > 0'))
    [('<', 7.0), ('>', 0.0), ('>=', 0.99)]
    """
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    found = re.findall(r"(==|!=|>=|<=|>|<)\s*([0-9]+(?:\.[0-9]+)?)", unquoted)
    return {(op, float(value)) for op, value in found}


def windows(expr: str) -> set[float]:
    """Seconds of each range the expression selects."""
    return {duration(w) for w in re.findall(r"\[(\w+)\]", expr)}


D = DEFAULTS
#: Per rule of a worker check: its comparisons and ranges, from the settings' defaults.
WORKER_CHECKS: dict[str, tuple[set[tuple[str, float]], set[float]]] = {
    # `> 0` of warmcast_maintenance_windows_active: quiet in a window of every model
    "WarmcastHealthDegraded": ({("<", D.health_score_min), (">", 0)}, set()),
    # `> 0`: a worker without usage yet counts from its start
    "WarmcastStaleData": ({(">", 0), (">", D.stale_after_seconds)}, set()),
    "WarmcastInsufficientVolume": ({("<", D.min_volume_events)}, {D.volume_window_seconds}),
    "WarmcastLowAccuracy": ({("<", D.accuracy_min), (">", 0)}, set()),
    "WarmcastSlowDecisions": (
        {(">", D.decision_latency_p95_max_seconds)},
        {D.decision_latency_window_seconds},
    ),
    "WarmcastWarmupQueueOverflow": ({(">", 0)}, {D.queue_overflow_window_seconds}),
    "WarmcastBudgetExhausted": ({(">=", D.budget_use_max)}, set()),
    "WarmcastDeadLetterBurst": ({(">=", D.dead_letter_burst)}, {D.dead_letter_window_seconds}),
    "WarmcastAgentCrashLoop": (
        {(">=", D.agent_crash_loop_crashes)},
        {D.agent_crash_loop_window_seconds},
    ),
    "WarmcastForwardedEvents": (
        {(">", D.forwarded_share_max), (">=", FORWARDED_MIN_EVENTS)},
        {D.forwarded_window_seconds},
    ),
}
#: Rules on what Prometheus alone sees, or with thresholds no setting has.
PROMETHEUS_ONLY = {
    "WarmcastWorkerDown",
    "WarmcastDrift",
    "WarmcastControlRejected",
    "WarmcastMetricAnomalies",
    "WarmcastHighColdStartRatio",
    "WarmcastRequestErrors",
    "WarmcastWastedWarmups",
    "WarmcastAlertsFiring",
    "WarmcastUndecodableBatch",
    "WarmcastInputHeld",
    "WarmcastNotReady",
}


@pytest.mark.parametrize("alert", sorted(WORKER_CHECKS))
def test_worker_check_thresholds_are_the_defaults(alert: str) -> None:
    expr = load_rules("warmcast")[alert]["expr"]
    expected_comparisons, expected_windows = WORKER_CHECKS[alert]
    assert comparisons(expr) == expected_comparisons, expr
    assert windows(expr) == expected_windows, expr


def test_every_rule_is_held_to_a_setting_or_named_as_prometheus_only() -> None:
    held = set(WORKER_CHECKS) | set(load_rules("warmcast-reliability"))
    assert set(load_rules()) == held | PROMETHEUS_ONLY


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
        if isinstance(n, ast.Assign)
        and getattr(n.targets[0], "id", "") == "RELIABILITY_ALERT_KINDS"
    )
    named = {"".join(w.title() for w in kind.split("_")) for kind in kinds}
    assert {f"Warmcast{name}" for name in named} <= set(rules)
