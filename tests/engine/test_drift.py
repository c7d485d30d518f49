"""DriftMonitor: fires on a synthetic change of the error, resolves after the hold."""

from __future__ import annotations

import random

from engine.drift import DriftMonitor


def test_fires_when_the_error_rises_and_resolves_later() -> None:
    rng = random.Random(1)
    mon = DriftMonitor(hold_minutes=50)
    flagged_at = []
    for minute in range(2000):
        mean = 0.05 if minute < 1000 else 0.6
        mon.update("m", min(1.0, max(0.0, rng.gauss(mean, 0.05))), minute)
        mon.expire(minute)
        if mon.flagged("m", minute):
            flagged_at.append(minute)
    alerts = mon.drain()
    firing = [a for a in alerts if a.firing]
    assert firing and all(1000 <= a.minute < 1100 for a in firing)
    assert {a.model_id for a in firing} == {None, "m"}
    assert firing[0].value > firing[0].threshold
    assert flagged_at and 1000 <= flagged_at[0] < 1100 and flagged_at[-1] < 1200
    resolved = [a for a in alerts if not a.firing]
    assert {a.model_id for a in resolved} == {None, "m"}
    assert not mon.flagged("m", 2000)


def test_quiet_on_a_stationary_error_and_on_an_improvement() -> None:
    rng = random.Random(2)
    mon = DriftMonitor()
    for minute in range(3000):
        mean = 0.5 if minute < 1500 else 0.1  # the learner got better: not a drift
        mon.update("m", min(1.0, max(0.0, rng.gauss(mean, 0.05))), minute)
    assert not [a for a in mon.drain() if a.firing]
