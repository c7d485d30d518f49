"""WarmAccuracy against a naive replay of the lease log (the evaluation rules)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.accuracy import WarmAccuracy
from engine.lease import Lease

steps = st.lists(
    st.tuples(
        st.integers(0, 3),  # minutes to move forward
        st.booleans(),  # a request in that minute
        st.one_of(st.none(), st.tuples(st.integers(-1, 5), st.integers(0, 12))),  # a lease
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_counts_match_a_replay_of_the_lease_log(
    script: list[tuple[int, bool, tuple[int, int] | None]],
) -> None:
    acc = WarmAccuracy()
    log: list[tuple[int, Lease]] = []
    invoked: set[int] = set()
    minute = 0
    for step, request, lease_spec in script:
        minute += step
        if request and minute not in invoked:
            invoked.add(minute)
            acc.invoked("m", minute)
        if lease_spec is not None:
            offset, length = lease_spec
            if offset < 0:
                lease = Lease.release(minute + 1)
            else:
                lease = Lease("warm", minute + 1 + offset, minute + 1 + offset + length)
            acc.decide("m", lease, minute)
            log.append((minute, lease))
    now = minute + 1

    def loaded(t: int) -> bool:
        state = False
        for issued, lease in log:  # the latest command issued before t wins
            if issued < t:
                state = lease.covers(t)
        return state

    loaded_minutes = sum(loaded(t) for t in range(now))
    hits = sum(loaded(t) for t in invoked)
    got = acc.counts(now)
    assert (got.loaded_minutes, got.hits, got.invoked_minutes) == (
        loaded_minutes,
        hits,
        len(invoked),
    )
