"""LogSketch: quantiles within the relative accuracy of a naive sorted list, at every step."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from engine.sketch import LogSketch


def naive_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_track_a_naive_reference_at_every_step(seed: int) -> None:
    rng = random.Random(seed)
    sketch, values = LogSketch(accuracy=0.02), []
    for _ in range(600):
        x = rng.lognormvariate(-1.0, 1.2)
        sketch.add(x)
        values.append(x)
        for q in (0.5, 0.95, 0.99):
            got, want = sketch.quantile(q), naive_quantile(values, q)
            assert got is not None
            assert abs(got - want) <= 0.02 * want * (1 + 1e-9), (q, len(values))


def test_merge_is_the_sketch_of_both_streams() -> None:
    rng = random.Random(7)
    a, b, both = LogSketch(), LogSketch(), LogSketch()
    for i in range(500):
        x = rng.expovariate(3.0)
        (a if i % 2 else b).add(x)
        both.add(x)
    a.merge(b)
    assert a.count == both.count
    for q in (0.1, 0.5, 0.9, 0.99):
        assert a.quantile(q) == both.quantile(q)


def test_memory_is_bounded_and_the_tail_stays_accurate() -> None:
    sketch = LogSketch(accuracy=0.02, max_bins=64)
    values = [10 ** (i / 100) for i in range(-900, 300)]  # 1e-9 .. 1e3 s
    for x in values:
        sketch.add(x)
    assert len(sketch.bins) <= 64
    want = naive_quantile(values, 0.99)
    got = sketch.quantile(0.99)
    assert got is not None and abs(got - want) <= 0.02 * want


def test_zeros_weights_and_empty() -> None:
    sketch = LogSketch()
    assert sketch.quantile(0.5) is None
    sketch.add(0.0, weight=3)
    sketch.add(2.0)
    sketch.add(float("nan"))  # ignored
    assert sketch.count == 4
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == pytest.approx(2.0, rel=0.02)


def test_serialised_forms_round_trip() -> None:
    sketch = LogSketch()
    for x in (0.0, 0.01, 0.2, 0.2, 3.0):
        sketch.add(x)
    again = LogSketch.from_list(sketch.to_list())
    assert again.to_list() == sketch.to_list() and again.count == sketch.count
    copy = pickle.loads(pickle.dumps(sketch))
    assert copy.quantile(0.9) == sketch.quantile(0.9)


def test_sketches_of_different_accuracy_do_not_merge() -> None:
    with pytest.raises(ValueError, match="same accuracy"):
        LogSketch(0.01).merge(LogSketch(0.05))
