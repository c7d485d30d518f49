"""WarmupQueue: bounded, weighted-fair, overflow counted and never raised."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.queue import DEFAULT_WEIGHTS, LEVELS, WarmupQueue


def test_levels_share_turns_by_weight_while_all_wait() -> None:
    q: WarmupQueue[int] = WarmupQueue(max_size=100_000)
    for level in range(LEVELS):
        for i in range(5000):
            q.push(f"{level}-{i}", level, i)
    served = Counter(q.pop()[0].split("-")[0] for _ in range(3100))  # type: ignore[index]
    total = sum(DEFAULT_WEIGHTS)
    for level, weight in enumerate(DEFAULT_WEIGHTS):
        assert served[str(level)] == pytest.approx(3100 * weight / total, abs=2)


def test_least_urgent_level_is_not_starved() -> None:
    q: WarmupQueue[int] = WarmupQueue(max_size=1000)
    for i in range(500):
        q.push(f"urgent-{i}", 0, i)
    q.push("slow", 4, 0)
    popped = [q.pop()[0] for _ in range(40)]  # type: ignore[index]
    assert "slow" in popped


def test_push_replaces_an_item_of_the_same_key() -> None:
    q: WarmupQueue[str] = WarmupQueue(max_size=10)
    q.push("m", 4, "old")
    q.push("m", 0, "new")
    assert len(q) == 1 and q.depth() == [1, 0, 0, 0, 0]
    assert q.pop() == ("m", "new")
    assert q.pop() is None


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 30), st.integers(-2, 6)),
        st.tuples(st.just("pop"), st.just(0), st.just(0)),
        st.tuples(st.just("remove"), st.integers(0, 30), st.just(0)),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(1, 12))
def test_size_never_exceeds_the_bound_and_overflow_is_counted(
    script: list[tuple[str, int, int]], size: int
) -> None:
    q: WarmupQueue[int] = WarmupQueue(max_size=size)
    naive: dict[str, int] = {}  # key -> level, a reference of what must be inside
    overflow = 0
    for op, key_n, level in script:
        key = f"m{key_n}"
        if op == "push":
            clamped = min(max(level, 0), LEVELS - 1)
            naive.pop(key, None)
            if len(naive) >= size:
                overflow += 1
                victims = [k for k, lv in naive.items() if lv > clamped]
                if not victims:
                    assert q.push(key, level, key_n) == key
                    continue
                worst = max(naive[k] for k in victims)
                assert q.push(key, level, key_n) in {k for k in victims if naive[k] == worst}
                naive = {k: lv for k, lv in naive.items() if k in q}
            else:
                assert q.push(key, level, key_n) is None
            naive[key] = clamped
        elif op == "pop":
            got = q.pop()
            if got is None:
                assert not naive
            else:
                assert naive.pop(got[0]) is not None
        else:
            q.remove(key)
            naive.pop(key, None)
        assert len(q) == len(naive) <= size
        assert q.stats.overflow == overflow
