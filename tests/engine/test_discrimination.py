"""The learner-ranking quantity the ``low_accuracy`` check judges: high when the learner
tells used minutes from idle ones, near chance when its labels carry no information."""

from __future__ import annotations

import random

from engine.accuracy import Discrimination
from engine.analyzer import UsagePatternAnalyzer
from engine.healthscore import Observations, evaluate, score
from engine.prediction import PredictionEngine
from engine.warmcast import WarmcastPolicy
from tests.engine.test_warmcast import drive

END = 3000


def fleet(seed: int = 1) -> dict[str, list[int]]:
    """Timers of several periods and Poisson models of several rates."""
    rng = random.Random(seed)
    minutes = {f"timer{i}": list(range(i, END, 7 + i)) for i in range(10)}
    for i in range(5):
        minutes[f"poisson{i}"] = sorted(rng.sample(range(END), 100 * (i + 1)))
    return minutes


def learn(minutes: dict[str, list[int]], labels: dict[str, list[int]]) -> Discrimination:
    """A prediction engine asked, each minute, about every known model's next minute (as the
    policy asks it), with features from ``minutes`` and labels from ``labels``."""
    analyzer = UsagePatternAnalyzer()
    engine = PredictionEngine(analyzer.bins)
    by_minute: dict[int, list[str]] = {}
    for m, ts in minutes.items():
        for t in ts:
            by_minute.setdefault(t, []).append(m)
    label_sets = {m: set(ts) for m, ts in labels.items()}
    for t in range(END):
        counts = {m: 1 for m, ts in label_sets.items() if t in ts}
        engine.resolve(t, counts)
        for m in by_minute.get(t, []):
            analyzer.update(m, t)
        for m in list(minutes):
            usage = analyzer.get(m)
            if usage is not None:
                engine.ask(m, usage, analyzer.hazards_at(m, t - usage.last), t + 1)
    return engine.discrimination


def test_perfect_and_chance_rankings() -> None:
    d = Discrimination()
    for _ in range(100):
        d.add(0.95, True)
        d.add(0.05, False)
    assert d.auc() == 1.0
    noise = Discrimination()
    rng = random.Random(0)
    for _ in range(5000):
        noise.add(rng.random(), rng.random() < 0.2)
    auc = noise.auc()
    assert auc is not None and abs(auc - 0.5) < 0.05


def test_no_judgement_before_enough_of_each_outcome() -> None:
    d = Discrimination()
    for _ in range(1000):
        d.add(0.9, True)
    for _ in range(49):
        d.add(0.1, False)
    assert d.auc(min_each=50) is None
    d.add(0.1, False)
    assert d.auc(min_each=50) == 1.0


def test_partitions_merge_into_one_ranking() -> None:
    a, b, both = Discrimination(), Discrimination(), Discrimination()
    rng = random.Random(3)
    for i in range(2000):
        p, y = rng.random(), rng.random() < 0.3
        (a if i % 2 else b).add(p, y)
        both.add(p, y)
    a.merge(b)
    assert a.auc() == both.auc()


def test_a_learner_with_true_labels_ranks_well_and_the_check_passes() -> None:
    minutes = fleet()
    auc = learn(minutes, minutes).auc()
    assert auc is not None and auc > 0.85
    checks = {r.name: r for r in evaluate(Observations(1.0, 5000, 0, discrimination=auc))}
    assert checks["low_accuracy"].status == "ok"


def test_a_learner_fed_shuffled_labels_fails_the_check() -> None:
    minutes = fleet()
    rng = random.Random(7)
    shuffled = {m: sorted(rng.sample(range(END), len(ts))) for m, ts in minutes.items()}
    names = list(shuffled)
    rng.shuffle(names)  # and each model gets another model's shuffled minutes
    labels = dict(zip(minutes, (shuffled[n] for n in names), strict=True))
    auc = learn(minutes, labels).auc()
    assert auc is not None and auc < 0.6
    results = evaluate(Observations(1.0, 5000, 0, discrimination=auc))
    assert {r.name for r in results if r.failing} == {"low_accuracy"}
    assert score(results) == 0.75


def test_the_warmcast_policy_learner_ranks_a_structured_fleet_well() -> None:
    policy = WarmcastPolicy(min_samples=200, sample_share=1.0)
    drive(policy, fleet(), END)
    auc = policy.predictor.discrimination.auc()
    assert auc is not None and auc > 0.85


def test_a_learner_checkpointed_before_the_ranking_was_kept_learns_on() -> None:
    import pickle
    import zlib

    from engine.checkpoint import PartitionState, pack, restore
    from engine.core import WarmupEngine

    policy = WarmcastPolicy(min_samples=10, sample_share=1.0)
    drive(policy, {"m": list(range(0, 600, 7))}, 600)
    # a checkpoint of the form before: the learner without its Discrimination
    del policy.predictor.__dict__["discrimination"]
    state = restore(zlib.compress(pack(PartitionState(WarmupEngine(policy), None, None))))
    learner = state.engine.policy.predictor  # type: ignore[attr-defined]
    assert isinstance(learner.discrimination, Discrimination)
    samples = learner.samples
    drive(state.engine.policy, {"m": list(range(600, 1200, 7))}, 1200)  # learns on
    ranked = learner.discrimination
    assert learner.samples > samples and sum(ranked.positives) + sum(ranked.negatives) > 0
    again = pickle.loads(pickle.dumps(learner)).discrimination
    assert again.negatives == ranked.negatives
