"""Prometheus's own tool on ops/prometheus/: the configuration and the rules load, and the
unit tests of alerts_test.yml pass: every alert fires at its threshold, with its labels and
annotations, once its ``for`` has elapsed, and stays quiet just on the safe side of it.

promtool comes with Debian's ``prometheus`` package (.ci/run installs it). Without it
these tests are skipped, except in CI (``CI`` set), where they fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.needs import need
from tests.ops.promql import selectors
from tests.ops.test_rules import duration, load_rules

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "ops/prometheus"
UNIT_TESTS = PROMETHEUS / "alerts_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return need(
        shutil.which("promtool"),
        "promtool is not installed (Debian: apt-get install prometheus; .ci/run does)",
        "CI must check the Prometheus rules",
    )


def run(promtool: str, *args: str) -> str:
    """promtool's output; the test fails with it unless promtool succeeds."""
    done = subprocess.run([promtool, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def test_config_is_valid_and_loads_the_rules(promtool: str) -> None:
    out = run(promtool, "check", "config", "ops/prometheus/prometheus.yml")
    assert "SUCCESS: 1 rule files found" in out, out
    assert f"SUCCESS: {len(load_rules())} rules found" in out, out


def test_rules_are_valid(promtool: str) -> None:
    out = run(promtool, "check", "rules", "ops/prometheus/alerts.yml")
    assert f"SUCCESS: {len(load_rules())} rules found" in out, out


def test_rule_unit_tests_pass(promtool: str) -> None:
    out = run(promtool, "test", "rules", "ops/prometheus/alerts_test.yml")
    assert "SUCCESS" in out, out


def cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(test group, alert test) of every alert test in alerts_test.yml."""
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    return [(group, case) for group in doc["tests"] for case in group["alert_rule_test"]]


@pytest.mark.parametrize("alert", sorted(load_rules()))
def test_every_alert_is_unit_tested(alert: str) -> None:
    """Each alert fires in some test with its severity and annotations, is quiet in some
    test, and, if it has a ``for``, is quiet in the same test earlier than firing by no
    more than the ``for`` (so the test sees it wait)."""
    rule = load_rules()[alert]
    mine = [(g, c) for g, c in cases() if c["alertname"] == alert]
    firing = [(g, c) for g, c in mine if c["exp_alerts"]]
    assert firing, f"{alert}: no test where it fires"
    for _, case in firing:
        for expected in case["exp_alerts"]:
            assert expected["exp_labels"]["severity"] == rule["labels"]["severity"]
            assert set(expected["exp_annotations"]) == set(rule["annotations"])
    assert any(not c["exp_alerts"] for _, c in mine), f"{alert}: no test where it is quiet"
    wait = duration(rule.get("for"))
    if wait:
        waited = [
            duration(f["eval_time"]) - duration(q["eval_time"])
            for group, f in firing
            for g, q in mine
            if g is group and not q["exp_alerts"]
        ]
        assert any(0 < d <= wait for d in waited), f"{alert}: no test of its `for` ({wait}s)"


def test_rules_select_the_job_prometheus_scrapes() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    selected = {
        value
        for rule in load_rules().values()
        for _, matchers in selectors(rule["expr"])
        for label, op, value in matchers
        if label == "job"
    }
    assert selected and selected <= jobs, (selected, jobs)
