"""PerformancePredictor: a sane default, then convergence on a synthetic load-time stream."""

from __future__ import annotations

import random

from engine.performance import PerformancePredictor


def test_default_before_any_measurement_and_pooled_prior_for_new_models() -> None:
    pp = PerformancePredictor(default_seconds=25.0)
    assert pp.predict_one("never-seen") == 25.0
    for _ in range(50):
        pp.learn_one("big", 40.0)
    assert 35.0 < pp.predict_one("new") <= 40.0  # borrows from what the fleet measured


def test_converges_per_model_and_the_error_shrinks() -> None:
    rng = random.Random(7)
    truth = {"small": 3.0, "base": 23.0, "large": 52.0}
    pp = PerformancePredictor(default_seconds=20.0, spread=0.0)
    early: list[float] = []
    late: list[float] = []
    for i in range(3000):
        model_id = rng.choice(sorted(truth))
        actual = max(0.1, rng.gauss(truth[model_id], 0.1 * truth[model_id]))
        error = abs(pp.predict_one(model_id) - actual)
        (early if i < 30 else late).append(error)
        pp.learn_one(model_id, actual)
    for model_id, mean in truth.items():
        assert abs(pp.predict_one(model_id) - mean) < 0.25 * mean
    assert sum(late) / len(late) < 0.5 * sum(early) / len(early)
    assert pp.mae.get() > 0 and pp.n_measurements == 3000


def test_planning_time_covers_a_slow_load_and_bad_values_are_ignored() -> None:
    pp = PerformancePredictor(spread=1.0)
    for seconds in (10.0, 30.0) * 20:
        pp.learn_one("m", seconds)
    assert pp.predict_one("m") > 25.0  # mean 20 plus one standard deviation
    pp.learn_one("m", float("nan"))
    pp.learn_one("m", -3.0)
    assert pp.n_measurements == 40
