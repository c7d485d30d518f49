"""The status page served at ``/``: plain HTML and a little JavaScript, no build step.

It reads ``/health`` and ``/health/components`` every few seconds and shows the health
score, the checks, the seven components, the served models with the most cold starts
and the recent alerts; with shadow policies, ``/policies`` too, drawn as a small chart of
each policy's cold minutes per bucket of event time (inline SVG), the active one bold.
When the worker asks for its control token, the page asks for it once and keeps it for
the browser tab (``sessionStorage``).
"""

from __future__ import annotations

#: Seconds between refreshes of the page's data.
REFRESH_SECONDS = 5

STATUS_PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>warmcast status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 12px 24px; display: flex; gap: 24px;
           align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  main { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; padding: 16px 24px; }
  section { background: #fff; border-radius: 6px; padding: 12px 16px;
            box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  section.wide { grid-column: 1 / 3; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eceef2; }
  th { font-weight: 600; color: #5b6475; }
  .score { font-size: 40px; font-weight: 700; }
  .ok { color: #1a7f37; } .failing, .firing, .critical { color: #c62828; }
  .warning { color: #b26a00; } .na, .resolved, .info { color: #8a93a3; }
  #updated { color: #aab2c0; font-size: 12px; }
  #policy-chart svg { width: 100%; height: 180px; }
  #policy-chart .axis { stroke: #c4cad4; stroke-width: 1; }
  #policy-chart text { font-size: 11px; fill: #5b6475; }
  #policy-legend span { margin-right: 16px; white-space: nowrap; }
</style>
</head>
<body>
<header>
  <h1>warmcast</h1>
  <span id="status">loading&hellip;</span>
  <span id="policy"></span>
  <span id="worker"></span>
  <span id="updated"></span>
  <form id="token-form" hidden>
    <input id="token" type="password" placeholder="control token" autocomplete="off">
    <button>show</button>
  </form>
</header>
<main>
  <section>
    <h2>Health score</h2>
    <div class="score" id="score">&ndash;</div>
    <div id="score-note"></div>
    <table id="checks"><thead><tr><th>check</th><th>status</th><th>detail</th></tr></thead>
      <tbody></tbody></table>
  </section>
  <section>
    <h2>Components</h2>
    <table id="components"><thead><tr><th>component</th><th>applies</th><th>figures</th>
      <th>last update</th></tr></thead><tbody></tbody></table>
  </section>
  <section class="wide">
    <h2>Served models with the most cold starts</h2>
    <table id="models"><thead><tr><th>model</th><th>requests</th><th>cold starts</th>
      <th>cold rate (5 min)</th><th>p95 latency (5 min)</th><th>warmups used / wasted</th>
      <th>last seen</th></tr></thead><tbody></tbody></table>
  </section>
  <section class="wide" id="policies" hidden>
    <h2>Policies: cold minutes per bucket (%)</h2>
    <div id="policy-legend"></div>
    <div id="policy-chart"></div>
  </section>
  <section class="wide">
    <h2>Recent alerts</h2>
    <table id="alerts"><thead><tr><th>time</th><th>state</th><th>severity</th><th>kind</th>
      <th>subject</th><th>summary</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
const REFRESH_MS = """
    + str(REFRESH_SECONDS * 1000)
    + """;
const esc = (v) => String(v ?? "").replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
const when = (ts) => ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
const num = (v, d = 2) => (v === null || v === undefined) ? "" : Number(v).toFixed(d);
const ms = (s) => (s === null || s === undefined) ? "" :
  (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms";

function rows(id, items, render) {
  const body = document.querySelector("#" + id + " tbody");
  body.innerHTML = items.map(render).join("") ||
    '<tr><td class="na" colspan="7">none</td></tr>';
}

function figures(c) {
  const parts = [];
  if (c.data_volume !== null) parts.push("volume " + num(c.data_volume, 0));
  if (c.precision !== null) parts.push("precision " + num(c.precision));
  if (c.recall !== null) parts.push("recall " + num(c.recall));
  if (c.decision_latency_p95 !== null) parts.push("p95 " + ms(c.decision_latency_p95));
  if (c.queue_depth !== null) parts.push("queue " + c.queue_depth + "/" + c.queue_capacity);
  if (c.budget_use !== null) parts.push("budget " + num(c.budget_use * 100, 0) + "%");
  if (c.note) parts.push(c.note);
  return esc(parts.join(", "));
}

function showHealth(h) {
  const score = document.getElementById("score");
  score.textContent = num(h.score);
  score.className = "score " + (h.score < h.score_min ? "failing" : h.score < 1 ? "warning" : "ok");
  document.getElementById("score-note").textContent =
    "alerts below " + num(h.score_min) + "; " + h.tracked_models + " served models";
  const status = document.getElementById("status");
  status.textContent = h.status;
  status.className = h.status === "ok" ? "ok" : "warning";
  document.getElementById("policy").textContent = "policy " + h.policy;
  document.getElementById("worker").textContent = h.worker;
  rows("checks", h.checks, (c) => '<tr><td>' + esc(c.name) + '</td><td class="' +
    (c.status === "not_applicable" ? "na" : esc(c.status)) + '">' +
    esc(c.status.replace("_", " ")) + '</td><td>' + esc(c.summary) + '</td></tr>');
  rows("models", h.models, (m) => {
    const w = (m.windows || {})["300"] || {};
    const u = m.warmups || {};
    return '<tr><td>' + esc(m.model_id) + '</td><td>' + m.requests_total + '</td><td>' +
      m.cold_starts_total + '</td><td>' + num(w.cold_start_rate) + '</td><td>' +
      ms(w.latency_p95) + '</td><td>' + (u.used ?? 0) + ' / ' + (u.wasted ?? 0) +
      '</td><td>' + when(m.last_seen) + '</td></tr>';
  });
  rows("alerts", h.recent_alerts, (a) => '<tr><td>' + when(a.since || a.ts) +
    '</td><td class="' + esc(a.state) + '">' + esc(a.state) + '</td><td class="' +
    esc(a.severity) + '">' + esc(a.severity) + '</td><td>' + esc(a.kind) + '</td><td>' +
    esc(a.subject) + '</td><td>' + esc(a.summary) + '</td></tr>');
}

function showComponents(doc) {
  rows("components", doc.components, (c) => '<tr><td>' + esc(c.name) + '</td><td class="' +
    (c.applicable ? "ok" : "na") + '">' + (c.applicable ? "yes" : "not applicable") +
    '</td><td>' + figures(c) + '</td><td>' + when(c.last_update) + '</td></tr>');
}

const COLOURS = ["#1d5fbf", "#c62828", "#1a7f37", "#b26a00", "#6a3fb5", "#00838f"];

function chart(doc) {
  const buckets = doc.buckets || [];
  const names = [doc.active.policy, ...doc.candidates.map((c) => c.policy)];
  const w = 1000, h = 180, left = 36, bottom = 20;
  const first = buckets.length ? buckets[0].minute : 0;
  const span = Math.max((buckets.length ? buckets[buckets.length - 1].minute : 0) - first, 1);
  const x = (minute) => left + (w - left - 8) * (minute - first) / span;
  const y = (pct) => 6 + (h - bottom - 6) * (1 - Math.min(Math.max(pct, 0), 100) / 100);
  let svg = '<svg viewBox="0 0 ' + w + ' ' + h + '" preserveAspectRatio="none" role="img">';
  for (const pct of [0, 50, 100]) {
    svg += '<line class="axis" x1="' + left + '" x2="' + w + '" y1="' + y(pct) + '" y2="' +
      y(pct) + '"/><text x="2" y="' + (y(pct) + 4) + '">' + pct + '</text>';
  }
  names.forEach((name, i) => {
    const points = buckets.filter((b) => name in b.cold_pct)
      .map((b) => x(b.minute).toFixed(1) + "," + y(b.cold_pct[name]).toFixed(1));
    if (!points.length) return;
    svg += '<polyline fill="none" stroke="' + COLOURS[i % COLOURS.length] + '" stroke-width="' +
      (i === 0 ? 3 : 1.5) + '" points="' + points.join(" ") + '"><title>' + esc(name) +
      '</title></polyline>';
  });
  for (const change of doc.changes || []) {
    const at = x(Number(change.window_last_minute) + 1);
    svg += '<line stroke="#8a93a3" stroke-dasharray="4 3" x1="' + at + '" x2="' + at +
      '" y1="0" y2="' + (h - bottom) + '"><title>' + esc(change.action + " " + change.policy) +
      '</title></line>';
  }
  svg += '<text x="' + left + '" y="' + (h - 4) + '">minute ' + first + '</text></svg>';
  document.getElementById("policy-chart").innerHTML = svg;
  document.getElementById("policy-legend").innerHTML = names.map((name, i) =>
    '<span style="color:' + COLOURS[i % COLOURS.length] + '">&#9632; ' + esc(name) +
    (i === 0 ? " (active, " + esc(doc.version) + ")" : " (candidate)") + '</span>').join("");
}

async function refreshPolicies() {
  try {
    const doc = await getJson("/policies");
    const section = document.getElementById("policies");
    section.hidden = !doc.active;
    if (doc.active) chart(doc);
  } catch (err) {
    document.getElementById("policies").hidden = true;
  }
}

const TOKEN_KEY = "warmcast-control-token";
const tokenForm = document.getElementById("token-form");
tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  tokenForm.hidden = true;
  refresh();
});

async function getJson(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, token ? {headers: {Authorization: "Bearer " + token}} : {});
  if (response.status === 401) {
    tokenForm.hidden = false;
    throw new Error("this worker wants its control token");
  }
  return response.json();
}

async function refresh() {
  try {
    const [health, components] = await Promise.all([
      getJson("/health?limit=10&sort=cold_starts_total"),
      getJson("/health/components"),
    ]);
    showHealth(health);
    showComponents(components);
    await refreshPolicies();
    document.getElementById("updated").textContent = "updated " + when(Date.now() / 1000);
  } catch (err) {
    document.getElementById("status").textContent = "unreachable: " + err;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""
)
