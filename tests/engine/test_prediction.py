"""The prediction engine: vectorised profile vs one-at-a-time predictions, delayed labels."""

from __future__ import annotations

import math

from engine.analyzer import IdleBins, UsagePatternAnalyzer
from engine.prediction import Pending, PendingLabels, PredictionEngine, features_one


def test_profile_agrees_with_predict_one_on_exact_bins() -> None:
    a = UsagePatternAnalyzer(IdleBins(exact=120, growth=1.5, horizon=2000))
    for t in (0, 3, 4, 20, 26, 1500, 1503):
        a.update("m", t)
        a.close_minute(t)
    eng = PredictionEngine(a.bins)
    # move the learner away from its seed so every feature counts
    eng.learner._weights.update({"idle": -0.3, "rate_10": 0.2, "rate_60": 0.1, "volume": 0.4})
    eng.learner._weights["hour"] = 0.5
    eng.learner.intercept = -0.2
    eng._weights = eng.learner.weights
    usage = a.usage("m")
    eng.learner._weights.update({"smooth": 0.7, "regular": -0.4})
    eng._weights = eng.learner.weights
    probs = eng.profile(usage, a.hazards("m"))
    for k in (0, 1, 5, 59, 119):
        x = features_one(usage, a.hazards_at("m", k), usage.last + 1 + k)
        assert math.isclose(probs[k], eng.predict_one(x), rel_tol=1e-9)


def test_seeded_learner_starts_as_the_hazard() -> None:
    a = UsagePatternAnalyzer()
    for t in range(0, 100, 10):
        a.update("m", t)
        a.close_minute(t)
    eng = PredictionEngine(a.bins)
    h = a.hazard("m")
    probs = eng.profile(a.usage("m"), a.hazards("m"))
    assert abs(probs[9] - h[9]) < 1e-4
    assert probs[9] > 0.5 > probs[5]


def test_pending_labels_resolve_late_and_empty_minutes_count_as_no_request() -> None:
    a = UsagePatternAnalyzer()
    eng = PredictionEngine(a.bins)
    u = a.update("m", 0)
    eng.ask("m", u, a.hazards_at("m", 0), target=1)
    eng.ask("m", u, a.hazards_at("m", 0), target=2)
    eng.ask("m", u, a.hazards_at("m", 0), target=5)
    assert eng.resolve(0, {"m": 1}) == []  # nothing due yet
    got = [(r.y) for r in eng.resolve(4, {"m": 2})]  # minutes 1..3 closed empty
    assert got == [False, False]
    assert [r.y for r in eng.resolve(5, {"m": 1})] == [True]
    assert eng.samples == 3 and eng.positives == 1


def test_pending_buffer_is_bounded() -> None:
    buf = PendingLabels(max_size=10)
    for t in range(100):
        buf.push(Pending(t, "m", {}, 0.1))
    assert len(buf) == 10 and buf.dropped == 90


def test_learner_learns_that_a_timer_comes_every_five_minutes() -> None:
    a = UsagePatternAnalyzer(IdleBins(exact=30, growth=1.5, horizon=600))
    eng = PredictionEngine(a.bins, learning_rate=0.05)
    for minute in range(0, 3000):
        counts = {"timer": 1} if minute % 5 == 0 else {}
        for model_id in counts:
            a.update(model_id, minute)
        eng.resolve(minute, counts)
        a.close_minute(minute)
        u = a.usage("timer")
        eng.ask("timer", u, a.hazards_at("timer", minute - u.last), minute + 1)
    probs = eng.profile(a.usage("timer"), a.hazards("timer"))
    assert probs[4] > 0.9
    assert max(probs[:4]) < 0.05
    assert eng.log_loss.get() < 0.2
