"""The promotion and rollback rule (engine/promotion.py): a clearly better candidate is
promoted, an equal one is not, whatever the noise; the cool-down, the minimum data and the
memory tolerance hold it back; a regression held long enough rolls back, a shorter one
does not."""

from __future__ import annotations

import math
import random

import pytest

from engine.promotion import (
    BucketRecorder,
    Figures,
    Lineup,
    PromotionRule,
    judge_promotion,
    judge_rollback,
    merge,
    paired_t,
    t_upper_tail,
)

RULE = PromotionRule(bucket_minutes=5, window_buckets=12, min_buckets=6, min_requests=200)


def noisy(active_cold: float, candidate_cold: float, seed: int, buckets: int = 12) -> dict:
    """Buckets of 50 minutes with requests each; cold minutes drawn per minute with the
    given chances, for the active ``a`` and the candidate ``c``."""
    rng = random.Random(seed)
    out = {}
    for b in range(buckets):
        a = sum(rng.random() < active_cold for _ in range(50))
        c = sum(rng.random() < candidate_cold for _ in range(50))
        out[b] = {"a": Figures(a, 60, 50, 10), "c": Figures(c, 60, 50, 12)}
    return out


def test_a_clearly_better_candidate_is_promoted() -> None:
    history = noisy(0.6, 0.3, seed=1)
    decision = judge_promotion(history, Lineup("a", ["c"]), RULE, minute=60)
    assert decision is not None
    assert (decision.action, decision.policy, decision.replaced) == ("promote", "c", "a")
    assert decision.p_value is not None and decision.p_value < RULE.alpha
    assert decision.statistic > 3
    assert decision.buckets == 12 and (decision.first_minute, decision.last_minute) == (0, 59)
    assert decision.active.requests == decision.candidate.requests == 720
    details = decision.details()
    assert details["policy_cold_starts"] == decision.candidate.cold_starts
    assert details["replaced_cold_starts"] == decision.active.cold_starts


@pytest.mark.parametrize("seed", range(40))
def test_an_equal_candidate_is_not_promoted(seed: int) -> None:
    history = noisy(0.4, 0.4, seed=seed)
    assert judge_promotion(history, Lineup("a", ["c"]), RULE, minute=60) is None


def test_equal_candidates_are_promoted_about_as_often_as_alpha_says() -> None:
    """Over many equal pairs, the test's false promotions stay near its level (without the
    minimum gain, which would hide it)."""
    rule = PromotionRule(bucket_minutes=5, min_buckets=6, min_requests=0, min_gain_pct=0.0)
    promoted = sum(
        judge_promotion(noisy(0.4, 0.4, seed=s), Lineup("a", ["c"]), rule, minute=60) is not None
        for s in range(400)
    )
    assert promoted <= 12  # alpha 0.01 of 400 is 4; a wrong test would promote far more


def test_too_few_buckets_or_requests_are_not_judged() -> None:
    history = noisy(0.6, 0.3, seed=2)
    lineup = Lineup("a", ["c"])
    few = {b: history[b] for b in range(5)}
    assert judge_promotion(few, lineup, RULE, minute=60) is None
    strict = PromotionRule(bucket_minutes=5, min_requests=10_000)
    assert judge_promotion(history, lineup, strict, minute=60) is None


def test_the_open_bucket_is_not_judged() -> None:
    history = noisy(0.6, 0.3, seed=3, buckets=6)
    lineup = Lineup("a", ["c"])
    assert judge_promotion(history, lineup, RULE, minute=29) is None  # bucket 5 still open
    assert judge_promotion(history, lineup, RULE, minute=30) is not None


def test_a_candidate_that_wastes_too_much_memory_is_not_promoted() -> None:
    history = noisy(0.6, 0.3, seed=4)
    for row in history.values():  # 60 more wasted minutes per 50 minutes with requests
        c = row["c"]
        row["c"] = Figures(c.cold_starts, c.requests, c.requested_minutes, 10 + 60)
    assert judge_promotion(history, Lineup("a", ["c"]), RULE, minute=60) is None
    lenient = PromotionRule(bucket_minutes=5, min_requests=200, waste_tolerance=1.5)
    assert judge_promotion(history, Lineup("a", ["c"]), lenient, minute=60) is not None


def test_no_promotion_within_the_cool_down_of_a_change() -> None:
    history = noisy(0.6, 0.3, seed=5, buckets=24)
    lineup = Lineup("a", ["c"], changed_minute=30)  # cool-down 30 min: buckets from 61 on
    assert judge_promotion(history, lineup, RULE, minute=90) is None  # 5 buckets after it
    decision = judge_promotion(history, lineup, RULE, minute=95)
    assert decision is not None and decision.first_minute == 65


def test_the_best_of_several_candidates_is_promoted() -> None:
    history = noisy(0.6, 0.3, seed=6)
    better = noisy(0.6, 0.1, seed=7)
    for b, row in history.items():
        row["best"] = better[b]["c"]
    decision = judge_promotion(history, Lineup("a", ["c", "best"]), RULE, minute=60)
    assert decision is not None and decision.policy == "best"


def broken(buckets: int, regressed_from: int = 0) -> dict:
    return {
        b: {
            "a": Figures(45 if b >= regressed_from else 5, 100, 50, 0),
            "ref": Figures(5, 100, 50, 20),
        }
        for b in range(buckets)
    }


def test_a_regression_held_for_the_set_time_rolls_back_to_the_previous_policy() -> None:
    lineup = Lineup("a", ["ref"], previous="ref", changed_minute=-1)
    decision = judge_rollback(broken(3), lineup, RULE, minute=15, fallback="hybrid")
    assert decision is not None
    assert (decision.action, decision.policy, decision.replaced) == ("rollback", "ref", "a")
    assert decision.statistic == 15.0 and decision.buckets == 3
    assert judge_rollback(broken(3), lineup, RULE, minute=14, fallback="hybrid") is None


def test_a_regression_on_too_few_requests_does_not_roll_back() -> None:
    lineup = Lineup("a", ["ref"], previous="ref")
    strict = PromotionRule(bucket_minutes=5, min_requests=301)
    assert judge_rollback(broken(3), lineup, strict, minute=15, fallback="x") is None
    assert judge_rollback(broken(4), lineup, strict, minute=20, fallback="x") is not None


def test_a_regression_that_stops_does_not_roll_back() -> None:
    history = broken(4)
    history[1]["a"] = Figures(5, 100, 50, 0)  # one good bucket ends the run
    lineup = Lineup("a", ["ref"], previous="ref")
    assert judge_rollback(history, lineup, RULE, minute=20, fallback="hybrid") is None


def test_rollback_falls_back_when_there_was_no_promotion_and_needs_a_reference() -> None:
    lineup = Lineup("a", ["ref"])
    assert judge_rollback(broken(3), lineup, RULE, minute=15, fallback="ref") is not None
    assert judge_rollback(broken(3), lineup, RULE, minute=15, fallback="hybrid") is None


def test_waste_for_nothing_regresses_waste_that_buys_cold_starts_does_not() -> None:
    lineup = Lineup("a", ["ref"], previous="ref")
    wasteful = {b: {"a": Figures(5, 90, 50, 200), "ref": Figures(5, 90, 50, 20)} for b in range(3)}
    assert judge_rollback(wasteful, lineup, RULE, minute=15, fallback="x") is not None
    buying = {b: {"a": Figures(0, 90, 50, 200), "ref": Figures(25, 90, 50, 20)} for b in range(3)}
    assert judge_rollback(buying, lineup, RULE, minute=15, fallback="x") is None


def test_lineup_changes_keep_every_policy() -> None:
    lineup = Lineup("fixed:1", ["hybrid", "warmcast"])
    lineup.change("warmcast", minute=10)
    assert (lineup.active, lineup.previous, lineup.rollback_target("hybrid")) == (
        "warmcast",
        "fixed:1",
        "fixed:1",
    )
    lineup.change("fixed:1", minute=20, rollback=True)
    assert (lineup.active, lineup.previous, lineup.generation) == ("fixed:1", None, 2)
    assert sorted(lineup.candidates) == ["hybrid", "warmcast"]
    with pytest.raises(ValueError, match="no candidate"):
        lineup.change("nosuch", minute=30)


def student_t_tail(t: float, df: int, steps: int = 100_000) -> float:
    """P(T >= t) by integrating Student's density (a naive reference), over
    ``x = sqrt(df) tan(u)`` so that the heavy tail is inside a bounded interval."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    lower, upper = math.atan(t / math.sqrt(df)), math.pi / 2
    h = (upper - lower) / steps
    total = 0.0
    for i in range(steps):
        u = lower + (i + 0.5) * h
        x = math.sqrt(df) * math.tan(u)
        total += c * (1 + x * x / df) ** (-(df + 1) / 2) * math.sqrt(df) / math.cos(u) ** 2
    return total * h


@pytest.mark.parametrize("df", [1, 2, 3, 5, 8, 11])
@pytest.mark.parametrize("t", [-1.0, 0.5, 2.0, 4.0])
def test_the_t_tail_is_students(t: float, df: int) -> None:
    expected = student_t_tail(t, df)
    assert t_upper_tail(t, df) == pytest.approx(expected, abs=2e-4)


def test_paired_t_is_the_textbook_statistic() -> None:
    diffs = [1.5, -0.5, 2.0, 3.0, 0.5]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    t, p = paired_t(diffs)
    assert t == pytest.approx(mean / (sd / math.sqrt(5)))
    assert p == pytest.approx(t_upper_tail(t, 4))


def test_buckets_are_the_differences_of_running_figures_and_merge_over_partitions() -> None:
    running = {"a": Figures()}
    rec = BucketRecorder(5)
    rec.roll(0, lambda end: running)
    running = {"a": Figures(1, 2, 2, 1)}
    rec.roll(4, lambda end: running)  # same bucket: nothing closes
    rec.roll(5, lambda end: running)
    running = {"a": Figures(4, 6, 5, 3)}
    rec.roll(10, lambda end: running)
    first = rec.take()
    assert first == {0: {"a": Figures(1, 2, 2, 1)}, 1: {"a": Figures(3, 4, 3, 2)}}
    history: dict = {}
    merge(history, first, keep_from=0)
    merge(history, {1: {"a": Figures(1, 1, 1, 0)}}, keep_from=1)
    assert history == {1: {"a": Figures(4, 5, 4, 2)}}
