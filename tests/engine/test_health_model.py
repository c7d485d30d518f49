"""ModelHealth: warmup outcomes against a naive replay of leases and requests; what is
stored round-trips through JSON."""

from __future__ import annotations

import random

import orjson
import pytest

from engine.core import WarmupEngine
from engine.health import ModelHealth
from engine.policies import FixedKeepAlive, HybridHistogram, Policy


def naive_outcomes(ops: list[tuple[str, float, float]], now: float) -> tuple[int, int]:
    """(used, wasted) from the sequence of requests ``("req", ts, 0)`` and warm commands
    ``("warm", start, end)`` in the order they were processed: a lease is used if a request
    falls inside it while it is the current lease; an unused lease is wasted if the next
    lease replaced it after it had begun, or, for the last one, if it has ended."""
    leases: list[tuple[float, float, list[float]]] = []
    for kind, a, b in ops:
        if kind == "warm":
            leases.append((a, b, []))
        elif leases:
            leases[-1][2].append(a)
    used = wasted = 0
    for i, (start, end, requests) in enumerate(leases):
        if any(start <= ts < end for ts in requests):
            used += 1
        elif start < leases[i + 1][0] if i + 1 < len(leases) else end <= now:
            wasted += 1
    return used, wasted


@pytest.mark.parametrize("policy", [FixedKeepAlive(10), FixedKeepAlive(3), HybridHistogram()])
@pytest.mark.parametrize("seed", [1, 2])
def test_outcomes_follow_the_engine_leases(policy: Policy, seed: int) -> None:
    rng = random.Random(seed)
    engine = WarmupEngine(policy)
    health = ModelHealth("m")
    ops: list[tuple[str, float, float]] = []
    ts = 6_000.0
    for _ in range(300):
        ts += rng.choice([5.0, 30.0, 65.0, 200.0, 700.0, 3000.0])
        health.update(ts)
        ops.append(("req", ts, 0.0))
        for c in engine.observe("m", ts):
            health.on_command(c.action, c.start, c.end, c.issued_at)
            ops.append((c.action, c.start, c.end))
    used, wasted = naive_outcomes(ops, ts)
    snapshot = health.snapshot(ts)
    assert health.warmups_issued_total == sum(1 for op in ops if op[0] == "warm")
    assert (health.warmups_used_total, snapshot["warmups_wasted_total"]) == (used, wasted)


def test_a_repeated_command_counts_once() -> None:
    health = ModelHealth("m")
    for _ in range(3):
        health.on_command("warm", 60.0, 660.0, issued_at=0.0)
    assert (health.warmups_issued_total, health.warmups_wasted_total) == (1, 0)


def test_a_release_ends_an_unused_lease_as_wasted() -> None:
    health = ModelHealth("m")
    health.on_command("warm", 60.0, 660.0, issued_at=0.0)
    health.on_command("release", 120.0, 120.0, issued_at=60.0)
    assert health.warmups_wasted_total == 1 and health.lease is None


def test_windows_count_requests_errors_and_latency() -> None:
    health = ModelHealth("m")
    for i in range(10):
        health.update(
            1000.0 + i,
            count=2,
            cold=1 if i < 3 else 0,
            latency=0.1 * (i + 1),
            errors=2 if i == 9 else 0,
        )
    minute = health.snapshot(1009.0)["windows"]["60"]
    assert (minute["requests"], minute["events"]) == (20.0, 10.0)
    assert minute["cold_start_rate"] == pytest.approx(3 / 20)
    assert minute["error_rate"] == pytest.approx(2 / 20)
    assert minute["latency_p95"] == pytest.approx(1.0, rel=0.021)
    assert health.snapshot(5000.0)["windows"]["60"]["requests"] == 0.0


def test_stored_form_round_trips_through_json() -> None:
    health = ModelHealth("m")
    health.on_command("warm", 60.0, 660.0, issued_at=0.0)
    for i in range(5):
        health.update(100.0 + i * 40, latency=0.2, cold=i == 0)
    stored = orjson.loads(orjson.dumps(health.to_dict()))
    again = ModelHealth.from_dict(stored)
    assert again.snapshot(400.0) == health.snapshot(400.0)
    assert ModelHealth.from_dict({"model_id": "old", "requests_total": 3}).requests_total == 3
