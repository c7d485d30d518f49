"""``warmcast bench``: how it times a run and judges the targets, and a whole run on a
real broker (the session's: ``KAFKA_BOOTSTRAP_SERVERS``, a testcontainers Kafka or the
embedded broker) with a tiny input."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tools.bench import bench
from tools.bench_report import BenchReport, format_latency, format_report
from tools.bench_targets import targets
from tools.bench_throughput import row
from tools.bench_worker import BenchConfig, rate_from_samples

TARGETS = {
    "envelope_events_per_second",
    "single_ratio_to_faust_noop",
    "latency_p99_ms",
    "worker_bytes_per_model",
    "worker_rss_at_100k_models",
    "health_probe_p99_rise",
}


# -- timing a run from counter samples -------------------------------------------------


def test_the_rate_is_taken_between_samples_inside_the_run() -> None:
    # 1,000 events/s from t = 1.05 to 1.35; read every 0.1 s
    samples = [(1.0, 0.0), (1.1, 50.0), (1.2, 150.0), (1.3, 250.0), (1.4, 300.0)]
    assert rate_from_samples(samples, 300) == pytest.approx(1000.0)


def test_a_counter_already_past_zero_at_the_first_sample_does_not_bias_the_rate() -> None:
    samples = [(2.0, 120.0), (2.1, 220.0), (2.2, 320.0), (2.3, 400.0)]
    assert rate_from_samples(samples, 400) == pytest.approx(1000.0)


def test_with_one_sample_inside_the_run_the_rate_runs_to_the_sample_that_saw_its_end() -> None:
    assert rate_from_samples([(1.0, 0.0), (1.1, 100.0), (1.2, 300.0)], 300) == pytest.approx(2000.0)


def test_a_run_between_two_samples_is_timed_from_the_last_sample_that_counted_nothing() -> None:
    assert rate_from_samples([(1.0, 0.0), (1.1, 0.0), (1.2, 300.0)], 300) == pytest.approx(3000.0)


def test_a_run_over_before_the_first_sample_cannot_be_timed() -> None:
    with pytest.raises(ValueError, match="too few events"):
        rate_from_samples([(1.0, 300.0)], 300)


# -- the targets -----------------------------------------------------------------------


def model_memory(models: int, rss: int, per_model: float) -> dict[str, Any]:
    return {
        "models": models,
        "tracked_models": models,
        "new_models_per_second": 1000.0,
        "worker_rss_bytes": rss,
        "worker_bytes_per_model": per_model,
        "engine_bytes_per_model": 300.0,
    }


def probed(models: int, quiet_p99: float, probed_p99: float) -> dict[str, Any]:
    return {
        "tracked_models": models,
        "groups": {"quiet": {"p99_ms": quiet_p99}, "probed": {"p99_ms": probed_p99}},
        "p99_rise": round(probed_p99 / quiet_p99 - 1, 4),
    }


def report_with(
    *,
    single: float,
    noop_single: float,
    envelope: float,
    p99: float,
    memory: list[Any],
    probe: dict[str, Any] | None = None,
) -> BenchReport:
    report = BenchReport(config={})
    report.rows = [
        row("Faust agent, no work", "single", noop_single, 1e6),
        row("warmcast worker", "single", single, 1e6, noop_single),
        row("Faust agent, no work", "envelope 100", 500_000.0, 1e6),
        row("warmcast worker", "envelope 100", envelope, 1e6, 500_000.0),
    ]
    report.latency = {
        "offered_per_second": 1000.0,
        "events": 10_000,
        "commands": 10_000,
        "first_events_ms": 900.0,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "max_ms": p99 * 2,
        # the bare relay's p99 in the same run: the latency ceiling is 1.5x it, 49.5 ms
        "bare_relay": {
            "commands": 10_000,
            "p50_ms": 16.5,
            "p99_ms": 33.0,
            "max_ms": 66.0,
            "first_events_ms": 900.0,
        },
    }
    report.memory = memory
    report.probe = probe or {}
    return report


def test_each_target_is_judged_against_its_threshold() -> None:
    memory = [model_memory(1_000, 150 * 2**20, 9000.0), model_memory(100_000, 350 * 2**20, 1900.0)]
    config = BenchConfig()
    fast: dict[str, float] = dict(single=3_000.0, noop_single=4_000.0, envelope=60_000.0, p99=49.0)
    report = report_with(**fast, memory=memory, probe=probed(210_000, 40.0, 47.0))
    judged = {t["name"]: t for t in targets(report, config)}
    assert set(judged) == TARGETS
    assert all(t["judged"] for t in judged.values())
    assert judged["envelope_events_per_second"]["met"] is True
    assert judged["envelope_events_per_second"]["ratio_to_faust_noop"] == pytest.approx(0.12)
    assert judged["single_ratio_to_faust_noop"]["measured"] == pytest.approx(0.75)
    assert judged["single_ratio_to_faust_noop"]["met"] is False
    assert judged["latency_p99_ms"]["met"] is True
    assert judged["worker_bytes_per_model"]["measured"] == 1900.0  # the largest model count
    assert judged["worker_bytes_per_model"]["met"] is True
    assert judged["worker_rss_at_100k_models"]["met"] is True
    assert judged["health_probe_p99_rise"]["measured"] == pytest.approx(0.175)
    assert judged["health_probe_p99_rise"]["met"] is True

    slow = report_with(
        single=3_500.0,
        noop_single=4_000.0,
        envelope=40_000.0,
        p99=50.0,
        memory=[],
        probe=probed(210_000, 40.0, 48.0),
    )
    judged = {t["name"]: t for t in targets(slow, config)}
    assert judged["health_probe_p99_rise"]["met"] is False  # + 20 %: not less than 20 %
    assert judged["envelope_events_per_second"]["met"] is False
    assert judged["single_ratio_to_faust_noop"]["met"] is True
    assert judged["latency_p99_ms"]["met"] is False  # 50 ms > 1.5 x 33 ms
    assert not judged["worker_bytes_per_model"]["judged"]
    assert not judged["worker_rss_at_100k_models"]["judged"]

    # bytes count in powers of ten: 390 MiB is 409 MB, 1,990 B is under 2 KB, 2,010 B is not
    heavy = [model_memory(100_000, 390 * 2**20, 2_010.0)]
    judged = {t["name"]: t for t in targets(report_with(**fast, memory=heavy), config)}
    assert judged["worker_rss_at_100k_models"]["met"] is False
    assert judged["worker_bytes_per_model"]["met"] is False
    light = [model_memory(100_000, 399 * 10**6, 1_990.0)]
    judged = {t["name"]: t for t in targets(report_with(**fast, memory=light), config)}
    assert judged["worker_rss_at_100k_models"]["met"] is True
    assert judged["worker_bytes_per_model"]["met"] is True


def test_a_target_the_run_did_not_measure_is_not_judged() -> None:
    memory = [model_memory(400, 150 * 2**20, 500.0)]
    config = BenchConfig(latency_rate=100, model_counts=(200, 400))
    report = report_with(single=1.0, noop_single=1.0, envelope=1e6, p99=1.0, memory=memory)
    judged = {t["name"]: t for t in targets(report, config)}
    for name in ("latency_p99_ms", "worker_rss_at_100k_models"):
        assert judged[name]["judged"] is False
        assert judged[name]["met"] is False
        assert judged[name]["not_judged_because"]
    assert judged["worker_bytes_per_model"]["judged"] is True
    assert judged["health_probe_p99_rise"]["judged"] is False  # not measured
    small = report_with(**dict(single=1.0, noop_single=1.0, envelope=1e6, p99=1.0), memory=[])
    small.probe = probed(5_000, 10.0, 11.0)
    probe = {t["name"]: t for t in targets(small, config)}["health_probe_p99_rise"]
    assert not probe["judged"] and "5,000 served models" in probe["not_judged_because"]
    report.targets = list(judged.values())
    assert "not judged" in format_report(report)


# -- a whole run -----------------------------------------------------------------------


def timed_load(p50: float, p99: float, commands: int = 100) -> dict[str, Any]:
    return {
        "events": 100,
        "commands": commands,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": 2 * p99,
        "first_events_ms": 5.0,
        "p99_ms_by_second": [p99] if commands else [],
    }


def test_the_latency_table_sets_the_worker_above_what_bounds_it() -> None:
    lat = {
        **timed_load(30.0, 61.0),
        "offered_per_second": 1000.0,
        "bare_relay": timed_load(20.0, 42.0),
        "faust_relay": timed_load(0.0, 0.0, commands=0),  # nothing came back through it
        "broker_hop": timed_load(5.0, 11.0),
    }
    lines = format_latency(lat)
    header = next(i for i, line in enumerate(lines) if "answered" in line)
    by_second = lines.index("p99 in each second of the run, ms")
    rows = lines[header + 1 : by_second]
    assert [r[:34].strip() for r in rows] == [
        "warmcast worker",
        "bare aiokafka relay",
        "Faust agent relaying",
        "one trip through the broker alone",
    ]
    assert rows[0].split()[-5:] == ["100", "30.0", "61.0", "122.0", "5.0"]
    assert rows[2].split()[-1] == "0"  # answered none, and has no figures
    series = lines[by_second + 1 :]
    assert [s.split()[-1] for s in series] == ["61", "42", "11"]  # the relay with none: no row
    assert "sent with a 0 ms producer linger" in lines[1]  # no linger recorded: none
    assert format_latency({}) == []


@pytest.mark.integration
@pytest.mark.timeout(900)  # a dozen workers and Faust agents started in turn: minutes
def test_a_tiny_run_measures_every_stage(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    config = BenchConfig(
        single_events=2_000,
        envelope_events=20_000,
        latency_rate=100,
        latency_seconds=1.0,
        model_counts=(200, 400),
        json_out=str(out),
        probe_models=300,
        probe_seconds=2.0,
    )
    handler = signal.getsignal(signal.SIGTERM)

    assert bench(config, bootstrap=kafka_bootstrap) == 0

    assert signal.getsignal(signal.SIGTERM) == handler
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["config"]["bootstrap"] == kafka_bootstrap
    shadow = report["shadow"]  # two shadow policies and none: in process and the worker
    assert shadow["events_per_second_without"] > 0 and shadow["events_per_second_with_two"] > 0
    assert shadow["events"] == 20_000 and "shadow policies" in printed
    assert [len(shadow["worker_rounds"][side]) for side in ("none", "two")] == [2, 2]
    assert shadow["worker_events_per_second_with_two"] == max(shadow["worker_rounds"]["two"])
    assert shadow["worker_ratio"] > 0 and "worker through the broker" in printed

    rows = {(r["stage"], r["messages"]): r for r in report["rows"]}
    stages = (
        "bare aiokafka getmany + orjson",
        "Faust agent, no work",
        "warmcast engine in process",
        "warmcast worker",
    )
    assert set(rows) == {(stage, kind) for stage in stages for kind in ("single", "envelope 100")}
    assert all(r["events_per_second"] > 0 for r in report["rows"])
    for kind in ("single", "envelope 100"):
        worker = rows[("warmcast worker", kind)]
        assert worker["ratio_to_faust_noop"] > 0
        assert worker["ratio_to_engine"] == pytest.approx(
            worker["events_per_second"]
            / rows[("warmcast engine in process", kind)]["events_per_second"],
            abs=1e-3,
        )
        for stage in stages[1:]:  # in turns, best kept
            r = rows[(stage, kind)]
            assert len(r["rounds_events_per_second"]) == config.rounds == 2
            assert r["events_per_second"] == max(r["rounds_events_per_second"])

    latency = report["latency"]
    assert latency["events"] == 100
    assert latency["producer_linger_ms"] == config.latency_linger_ms == 5.0
    assert latency["commands"] > 0
    assert latency["p99_ms"] >= latency["p50_ms"] > 0
    assert latency["first_events_ms"] > 0
    hop = latency["broker_hop"]  # the same load, producer to reader, no worker between
    # the same load through relays that send each event straight on: the stack's floor
    relays = [latency["bare_relay"], latency["faust_relay"]]
    for floor in (hop, *relays):
        assert floor["events"] == 100
        assert floor["commands"] == 100
        assert floor["p99_ms"] >= floor["p50_ms"] > 0
    for timed in (latency, hop, *relays):  # the p99 of each second the events were sent in
        series = timed["p99_ms_by_second"]
        assert 1 <= len(series) <= 2
        assert all(0 < p99 <= timed["max_ms"] + 0.1 for p99 in series)  # rounded to 0.1 ms
        if len(series) == 1:  # one second: the run's own p99
            assert series[0] == pytest.approx(timed["p99_ms"], abs=0.1)  # rounded to 0.1 ms

    assert [m["models"] for m in report["memory"]] == [200, 400]
    for m in report["memory"]:
        assert m["worker_rss_bytes"] > 0
        assert m["tracked_models"] == m["models"]
        assert m["new_models_per_second"] > 0
        assert m["engine_bytes_per_model"] > 0

    judged = {t["name"]: t for t in report["targets"]}
    assert set(judged) == TARGETS
    assert all(
        isinstance(t["met"], bool) and isinstance(t["judged"], bool) for t in judged.values()
    )
    assert judged["envelope_events_per_second"]["judged"] is True
    assert judged["single_ratio_to_faust_noop"]["judged"] is True
    assert judged["latency_p99_ms"]["judged"] is False  # 100 events/s, not 1,000
    assert judged["latency_p99_ms"]["relay_p99_ms"] == {
        "bare_relay": latency["bare_relay"]["p99_ms"],
        "faust_relay": latency["faust_relay"]["p99_ms"],
    }
    assert judged["worker_rss_at_100k_models"]["judged"] is False
    assert judged["health_probe_p99_rise"]["judged"] is False  # 300 models, not 200,000

    probe = report["probe"]  # spans of 0.25 s in a 2 s run, probed twice each
    assert probe["tracked_models"] >= 300 and probe["events"] == 200
    assert probe["block_seconds"] == 0.25
    assert set(probe["groups"]) == {"quiet", "probed"}
    assert probe["groups"]["quiet"]["commands"] + probe["groups"]["probed"]["commands"] == 200
    assert probe["answers"]["count"] >= 1 and probe["answers"]["statuses"] == [200]

    for text in (
        "bare aiokafka getmany + orjson",
        "Faust agent, no work",
        "warmcast worker",
        "warmcast engine in process",
        "/engine",
        "event -> command latency",
        "bare aiokafka relay",
        "Faust agent relaying",
        "one trip through the broker alone",
        "p99 in each second of the run",
        "worker RSS",
        "/health once a second at",
        "targets",
    ):
        assert text in printed


# -- the broker of a run -----------------------------------------------------------------


def test_the_broker_option_picks_the_local_broker_and_names_it_in_the_report() -> None:
    import argparse

    from tools.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["bench"]).broker == "tansu"
    assert parser.parse_args(["bench", "--broker", "kafka"]).broker == "kafka"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--broker", "nats"])

    report = BenchReport(config={"engine": "pure", "broker_described": "Apache Kafka 4.4.0"})
    assert format_report(report).splitlines()[:2] == ["engine: pure", "broker: Apache Kafka 4.4.0"]
