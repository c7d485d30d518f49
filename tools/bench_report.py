"""The bench's report: its figures, and the text it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tools.bench_latency import RELAYS
from tools.bench_shadow import format_shadow
from tools.bench_throughput import WORKER_STAGE

MB = 10**6  # the targets count bytes in powers of ten: 2 KB is 2,000 B


@dataclass
class BenchReport:
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)
    shadow: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def format_target(t: dict[str, Any]) -> str:
    value, unit = t["measured"], t["unit"]
    if value is None:
        shown = "-"
    elif unit == "ratio":
        shown = f"{value:.1%}"
    elif unit == "bytes" and t["threshold"] >= MB:
        shown = f"{value / MB:,.1f} MB"
    elif unit == "bytes":
        shown = f"{value:,.0f} B"
    elif unit == "ms":
        shown = f"{value:,.1f} ms"
    else:
        shown = f"{value:,.0f} {unit}"
    if t["name"] == "envelope_events_per_second" and t.get("ratio_to_faust_noop") is not None:
        shown += f" ({t['ratio_to_faust_noop']:.1%} of the Faust no-op)"
    if t.get("relay_p99_ms"):
        floors = ", ".join(
            f"{RELAYS[kind][0]} {p99:,.1f} ms" for kind, p99 in t["relay_p99_ms"].items()
        )
        shown += f" ({floors})"
    verdict = ("met" if t["met"] else "NOT met") if t["judged"] else "not judged"
    line = f"  {verdict:10} {t['target']}: {shown}"
    if not t["judged"]:
        line += f" ({t['not_judged_because']})"
    return line


def format_report(report: BenchReport) -> str:
    lines = [f"engine: {report.config.get('engine', '-')}"]
    if report.config.get("broker_described"):
        lines.append(f"broker: {report.config['broker_described']}")
    if report.rows:
        lines += [
            "",
            f"{'stage':34} {'messages':14} {'events/s':>12} {'/ceiling':>9} {'/faust':>8} "
            f"{'/engine':>8}",
            "-" * 90,
        ]
    for r in report.rows:
        noop, engine = r.get("ratio_to_faust_noop"), r.get("ratio_to_engine")
        lines.append(
            f"{r['stage']:34} {r['messages']:14} {r['events_per_second']:>12,.0f} "
            f"{r['ratio_to_ceiling']:>9.1%} {'' if noop is None else f'{noop:.1%}':>8} "
            f"{'' if engine is None else f'{engine:.1%}':>8}".rstrip()
        )
    lines.extend(format_latency(report.latency))
    if report.memory:
        lines.append("")
        lines.append(
            f"{'models':>8} {'tracked':>8} {'new/s':>8} {'worker RSS':>12} "
            f"{'worker B/model':>15} {'engine B/model':>15}"
        )
        for m in report.memory:
            lines.append(
                f"{m['models']:>8,} {m['tracked_models']:>8,} {m['new_models_per_second']:>8,.0f} "
                f"{m['worker_rss_bytes'] / MB:>9.1f} MB "
                f"{m['worker_bytes_per_model']:>15,.0f} {m['engine_bytes_per_model']:>15,.0f}"
            )
    lines.extend(format_probe(report.probe))
    lines.extend(format_shadow(report.shadow))
    if report.targets:
        lines.append("")
        lines.append("targets")
        lines.extend(format_target(t) for t in report.targets)
    return "\n".join(lines)


def format_latency(lat: dict[str, Any]) -> list[str]:
    """The latency block: the worker, then the relays and the broker trip that bound it."""
    if not lat:
        return []
    timed = [(WORKER_STAGE, lat)]
    timed += [(name, lat[kind]) for kind, (name, _) in RELAYS.items() if kind in lat]
    if "broker_hop" in lat:
        timed.append(("one trip through the broker alone", lat["broker_hop"]))
    lines = [
        "",
        f"event -> command latency at {lat['offered_per_second']:,.0f} events/s, "
        f"{lat['events']:,} events, sent with a {lat.get('producer_linger_ms', 0):g} ms "
        "producer linger",
        f"{'':34} {'answered':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'first ms':>9}",
    ]
    for name, t in timed:
        if not t.get("commands"):  # no command came back for any event
            lines.append(f"{name:34} {0:>9,}")
            continue
        lines.append(
            f"{name:34} {t['commands']:>9,} {t['p50_ms']:>8.1f} {t['p99_ms']:>8.1f} "
            f"{t['max_ms']:>8.1f} {t['first_events_ms']:>9.1f}"
        )
    lines.append("p99 in each second of the run, ms")
    lines.extend(
        f"  {name:34} {_series(t['p99_ms_by_second'])}"
        for name, t in timed
        if t.get("p99_ms_by_second")
    )
    return lines


def format_probe(probe: dict[str, Any]) -> list[str]:
    """The probe block: the latency of events sent while /health was asked and not."""
    if not probe:
        return []
    groups = probe.get("groups", {})
    lines = [
        "",
        f"/health once a second at {probe['tracked_models']:,} tracked served models, "
        f"events at {probe['offered_per_second']:,.0f}/s, in spans of "
        f"{probe['block_seconds']:g} s with and without probes",
        f"{'':34} {'answered':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for name, label in (("quiet", "no probes"), ("probed", "/health once a second")):
        g = groups.get(name)
        if g:
            lines.append(
                f"{label:34} {g['commands']:>9,} {g['p50_ms']:>8.1f} {g['p99_ms']:>8.1f} "
                f"{g['max_ms']:>8.1f}"
            )
    answers = probe.get("answers", {})
    if answers.get("count"):
        lines.append(
            f"/health answered {answers['count']} times: p50 {answers['p50_ms']:.1f} ms, "
            f"max {answers['max_ms']:.1f} ms, {answers['bytes'] / 1000:,.0f} kB each"
        )
    if probe.get("p99_rise") is not None:
        lines.append(f"p99 with probes / without: {1 + probe['p99_rise']:.1%}")
    return lines


def _series(values: list[float]) -> str:
    """Milliseconds, whole, in a row.

    >>> _series([4.25, 12.0, 130.4])
    '4 12 130'
    """
    return " ".join(f"{v:.0f}" for v in values)
