"""Anomalous load times: the learner against a naive robust z-score, anomalies are not
learned as normal, and the learners keep river's contract (clone, pickle)."""

from __future__ import annotations

import math
import pickle
import random
import statistics

import pytest

from engine.anomaly import MetricAnomalies, RobustZScore


def test_scores_agree_with_a_naive_robust_z_score() -> None:
    rng = random.Random(11)
    values = [rng.lognormvariate(math.log(20), 0.1) for _ in range(400)]
    learner = RobustZScore(warmup=20, min_scale=0.01)
    for y in values:
        learner.learn_one({}, y)
    logs = [math.log(v) for v in values]
    median = statistics.median(logs)
    mad = statistics.median(abs(v - median) for v in logs)
    for probe in (15.0, 20.0, 30.0, 60.0):
        naive = abs(math.log(probe) - median) / (1.4826 * mad)
        assert learner.score_one({}, probe) == pytest.approx(naive, rel=0.15, abs=0.3)


def test_a_burst_of_slow_loads_stays_anomalous() -> None:
    watch = MetricAnomalies(warmup=20, threshold=4.0)
    rng = random.Random(2)
    for i in range(50):
        watch.observe("m", "load_time", rng.uniform(18, 22), ts=i)
    flagged = [watch.observe("m", "load_time", 120.0, ts=50 + i) for i in range(30)]
    assert all(score is not None and score > 4.0 for score in flagged)
    assert watch.flagged == 30 and ("m", "load_time") in watch.active
    assert watch.observe("m", "load_time", 20.0, ts=100) < 4.0  # type: ignore[operator]
    assert watch.active == {}


def test_nothing_is_judged_during_warmup_and_series_are_bounded() -> None:
    watch = MetricAnomalies(warmup=5, max_series=2)
    assert watch.observe("a", "latency", 1.0, ts=0) == 0.0
    assert watch.observe("a", "latency", 100.0, ts=1) == 0.0  # still warming up
    watch.observe("b", "latency", 1.0, ts=2)
    assert watch.observe("c", "latency", 1.0, ts=3) is None  # over the series limit
    watch.forget("a")
    assert ("a", "latency") not in watch.learners


def test_learners_clone_fresh_and_pickle() -> None:
    learner = RobustZScore(warmup=3)
    for y in (1.0, 1.1, 0.9, 1.05, 1.0):
        learner.learn_one({}, y)
    assert learner.clone().n == 0
    copy = pickle.loads(pickle.dumps(learner))
    assert copy.score_one({}, 3.0) == learner.score_one({}, 3.0)
