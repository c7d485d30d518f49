"""TopRanking against a naive full sort of every model, after every change."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ranking import TopRanking


def naive(values: dict[str, float], n: int) -> list[tuple[str, float]]:
    """The first ``n`` models of the whole fleet, by (value, model id), highest first."""
    ordered = sorted(values.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return ordered[:n]


def check(ranking: TopRanking, values: dict[str, float]) -> None:
    """What the ranking says it knows exactly is the naive sort's head, and no model it
    left out could rank above its floor."""
    exact = ranking.exact
    assert ranking.top(len(values) + 1) == naive(values, exact)
    assert len(ranking) <= ranking.capacity
    outside = [(v, m) for m, v in values.items() if m not in ranking]
    if outside:
        assert ranking.floor is not None and max(outside) <= ranking.floor
    for offset in (0, 1, exact // 2):
        assert ranking.top(3, offset) == naive(values, exact)[offset : offset + 3]


operations = st.lists(
    st.tuples(
        st.sampled_from(["update", "update", "update", "discard"]),
        st.integers(min_value=0, max_value=40),  # model
        st.integers(min_value=0, max_value=30),  # value
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(min_value=1, max_value=12))
def test_any_changes_keep_the_exact_head_of_a_full_sort(
    ops: list[tuple[str, int, int]], capacity: int
) -> None:
    ranking, values = TopRanking(capacity), {}
    for op, model, value in ops:
        model_id = f"m{model}"
        if op == "update":
            ranking.update(model_id, value)
            values[model_id] = value
        else:
            ranking.discard(model_id)
            values.pop(model_id, None)
        check(ranking, values)
    ranking.rebuild(values.items())
    assert ranking.exact == min(capacity, len(values))
    check(ranking, values)


def test_a_growing_fleet_stays_exact_at_every_step() -> None:
    """Totals only grow: the ranking stays exact to its capacity, however many models."""
    rng = random.Random(18)
    ranking, values = TopRanking(100), {}
    for step in range(30_000):
        model_id = f"model-{rng.randrange(20_000):05d}"
        values[model_id] = values.get(model_id, 0) + rng.choice((1, 1, 1, 5, 40))
        ranking.update(model_id, values[model_id])
        if step % 1000 == 0:
            check(ranking, values)
    assert ranking.exact == 100
    assert ranking.top(100) == naive(values, 100)


def test_models_leaving_the_top_shrink_what_is_exact_until_a_rebuild() -> None:
    ranking = TopRanking(10)
    values = {f"m{i:03d}": float(i) for i in range(100)}
    for model_id, value in values.items():
        ranking.update(model_id, value)
    for model_id in ["m099", "m098", "m097"]:
        ranking.discard(model_id)
        del values[model_id]
    assert ranking.exact == 7
    assert ranking.top(10) == naive(values, 7)
    ranking.rebuild(values.items())
    assert ranking.top(10) == naive(values, 10)
