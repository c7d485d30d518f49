"""The status page's chart of the policies' scores, drawn by the page's own script (run in
Node with the few browser objects it touches): one line per policy through every bucket,
the active one bold, a mark at each change; hidden without shadow policies."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

from agents.status_page import STATUS_PAGE
from tests.needs import need

NODE = shutil.which("node")

HARNESS = """
const elements = {};
const element = (id) => elements[id] ??= {id, hidden: false, innerHTML: "", textContent: "",
  className: "", value: "", addEventListener() {}};
globalThis.document = {getElementById: element, querySelector: (q) => element(q)};
globalThis.sessionStorage = {getItem: () => null, setItem() {}};
globalThis.setInterval = () => 0;
const answer = JSON.parse(process.argv.at(-1));
globalThis.fetch = async (path) => ({status: path.startsWith("/policies") ? answer.status : 500,
  json: async () => answer.body});
"""


def run_page(status: int, body: Any) -> dict[str, Any]:
    script = re.search(r"<script>(.*)</script>", STATUS_PAGE, re.S)
    assert script is not None
    program = (
        HARNESS
        + script.group(1)
        + """
;(async () => {
  await refreshPolicies();
  const out = {};
  for (const [id, e] of Object.entries(elements)) out[id] = {hidden: e.hidden, html: e.innerHTML};
  console.log(JSON.stringify(out));
})();
"""
    )
    node = need(NODE, "needs node (Debian: apt-get install nodejs)")
    done = subprocess.run(
        [node, "-e", program, "--", json.dumps({"status": status, "body": body})],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_every_policy_is_a_line_through_its_buckets() -> None:
    buckets = [
        {"minute": 5 * i, "cold_pct": {"warmcast": 10.0 + i, "fixed:1": 100.0}} for i in range(8)
    ]
    doc = {
        "active": {"policy": "warmcast"},
        "candidates": [{"policy": "fixed:1"}],
        "version": "warmcast#1",
        "buckets": buckets,
        "changes": [{"action": "promote", "policy": "warmcast", "window_last_minute": 19}],
    }
    page = run_page(200, doc)
    assert page["policies"]["hidden"] is False
    svg = page["policy-chart"]["html"]
    lines = re.findall(r'<polyline[^>]*stroke-width="([\d.]+)" points="([^"]+)"', svg)
    assert [width for width, _ in lines] == ["3", "1.5"]  # the active policy first, bold
    assert all(len(points.split()) == 8 for _, points in lines)
    fixed = [tuple(map(float, p.split(","))) for p in lines[1][1].split()]
    assert len({y for _, y in fixed}) == 1  # 100 % throughout: a flat line at the top
    assert svg.count('stroke-dasharray="4 3"') == 1 and "promote warmcast" in svg
    legend = page["policy-legend"]["html"]
    assert "warmcast (active, warmcast#1)" in legend and "fixed:1 (candidate)" in legend


def test_without_shadow_policies_the_chart_is_hidden() -> None:
    page = run_page(404, {"error": "no shadow policies", "policy": "hybrid"})
    assert page["policies"]["hidden"] is True
    assert page.get("policy-chart", {"html": ""})["html"] == ""
