"""ResourceManager: the memory and warmup budgets are never exceeded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lease import Lease
from engine.resources import ResourceManager

decisions = st.lists(
    st.tuples(
        st.integers(0, 8),  # model
        st.integers(0, 3),  # minutes since the previous decision
        st.integers(1, 40),  # lease length
        st.booleans(),  # release instead of warm
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(decisions, st.integers(1, 5), st.one_of(st.none(), st.integers(1, 3)))
def test_memory_held_never_exceeds_the_budget(
    script: list[tuple[int, int, int, bool]], budget: int, per_minute: int | None
) -> None:
    rm = ResourceManager(max_memory=float(budget), max_warmups_per_minute=per_minute)
    rm.set_memory("m0", 2.0)
    held: dict[str, tuple[int, float]] = {}  # the reference: model -> (end, memory)
    loads: dict[int, int] = {}
    minute = 0
    for model_n, step, length, release in script:
        minute += step
        model_id = f"m{model_n}"
        held = {m: h for m, h in held.items() if h[0] > minute + 1}
        lease = (
            Lease.release(minute + 1) if release else Lease("warm", minute + 1, minute + 1 + length)
        )
        admitted = rm.admit(model_id, lease, minute)
        if release:
            assert admitted
            held.pop(model_id, None)
        elif admitted:
            new_load = model_id not in held
            held[model_id] = (lease.end, rm.memory_of(model_id))
            loads[minute] = loads.get(minute, 0) + new_load
        used = sum(mem for _, mem in held.values())
        assert used <= budget + 1e-9
        assert abs(rm.in_use(minute + 1) - used) < 1e-9
        if per_minute is not None:
            assert loads.get(minute, 0) <= per_minute


def test_refusals_are_counted_and_unlimited_admits_everything() -> None:
    rm = ResourceManager(max_memory=1.0)
    assert rm.admit("a", Lease("warm", 1, 10), 0)
    assert not rm.admit("b", Lease("warm", 1, 10), 0)
    assert rm.admit("a", Lease("warm", 1, 20), 0)  # an extension needs no new room
    assert rm.stats.refused_memory == 1
    free = ResourceManager()
    assert all(free.admit(f"m{i}", Lease("warm", 1, 10), 0) for i in range(1000))
    assert free.unlimited and free.stats.admitted == 1000
