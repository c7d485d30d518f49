"""The executor's lease book: what must be loaded when, from the commands read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.breaker import CircuitBreaker
from engine.leasebook import LeaseBook


def warm(book: LeaseBook, cid: str, model: str, issued: float, start: float, end: float) -> bool:
    return book.add(cid, model, "warm", issued_at=issued, start=start, end=end)


def test_loaded_from_lead_before_start_until_end() -> None:
    book = LeaseBook(lead=20.0)
    warm(book, "c1", "m", 0.0, 100.0, 200.0)
    assert book.plan(79.0, set()).load == []
    assert book.plan(80.0, set()).load == ["m"]
    assert book.plan(150.0, {"m"}) == ([], [])
    assert book.plan(200.0, {"m"}).unload == ["m"]


def test_duplicate_command_id_is_ignored() -> None:
    book = LeaseBook()
    assert warm(book, "c1", "m", 0.0, 60.0, 120.0)
    assert not warm(book, "c1", "m", 0.0, 60.0, 120.0)
    # the same id with other fields is still a duplicate: ids are derived from them
    assert not warm(book, "c1", "m", 0.0, 60.0, 9999.0)
    assert book.plan(200.0, {"m"}).unload == ["m"]


def test_release_unloads_at_once() -> None:
    book = LeaseBook()
    warm(book, "c1", "m", 0.0, 60.0, 3600.0)
    assert book.plan(100.0, {"m"}) == ([], [])
    book.add("r1", "m", "release", issued_at=130.0, start=130.0, end=130.0)
    assert book.plan(131.0, {"m"}).unload == ["m"]
    assert not book.live("m", 131.0)


def test_never_unloaded_under_a_live_lease() -> None:
    book = LeaseBook()
    warm(book, "old", "m", 0.0, 60.0, 300.0)
    # a newer lease, issued at 250, replaces the old one from 300: no gap at all
    warm(book, "new", "m", 250.0, 300.0, 900.0)
    for t in range(60, 900, 5):
        assert book.plan(float(t), {"m"}).unload == [], t
    assert book.plan(900.0, {"m"}).unload == ["m"]


def test_newer_lease_cuts_an_older_one_at_the_next_minute() -> None:
    book = LeaseBook()
    warm(book, "long", "m", 0.0, 60.0, 3600.0)
    warm(book, "short", "m", 125.0, 180.0, 240.0)  # issued at 125: replaces from 180
    assert book.live("m", 179.0) and book.live("m", 239.0)
    assert not book.live("m", 240.0)  # the old lease no longer covers 240..3600


def test_stale_release_does_not_cut_a_newer_lease() -> None:
    book = LeaseBook()
    warm(book, "new", "m", 500.0, 540.0, 900.0)
    book.add("old-release", "m", "release", issued_at=100.0, start=100.0, end=100.0)
    assert book.live("m", 600.0)


def test_models_never_commanded_are_left_alone() -> None:
    book = LeaseBook()
    warm(book, "c1", "m", 0.0, 60.0, 120.0)
    assert book.plan(500.0, {"m", "someone-elses"}).unload == ["m"]


def test_measured_lead_moves_the_load_earlier() -> None:
    book = LeaseBook(lead=0.0)
    warm(book, "c1", "m", 0.0, 100.0, 200.0)
    assert book.plan(90.0, set()).load == []
    book.set_lead("m", 15.0)
    assert book.plan(90.0, set()).load == ["m"]
    assert book.due("m", 90.0) == 100.0


def test_most_urgent_load_first_and_next_change() -> None:
    book = LeaseBook()
    warm(book, "a", "late", 0.0, 100.0, 200.0)
    warm(book, "b", "early", 0.0, 50.0, 200.0)
    assert book.plan(120.0, set()).load == ["early", "late"]
    assert book.next_change(120.0) == 200.0


def test_prune_forgets_ended_leases_but_keeps_loaded_models() -> None:
    book = LeaseBook()
    warm(book, "c1", "m", 0.0, 60.0, 120.0)
    book.prune(500.0, {"m"})
    assert "m" in book.models  # still loaded: it must be unloaded first
    assert book.plan(500.0, {"m"}).unload == ["m"]
    book.prune(500.0, set())
    assert len(book) == 0


def test_seen_ids_are_bounded() -> None:
    book = LeaseBook(memory=10)
    for i in range(100):
        warm(book, f"c{i}", "m", float(i), 60.0, 120.0)
    assert len(book.seen) == 10


command = st.tuples(
    st.sampled_from(["warm", "release"]),
    st.integers(0, 20).map(lambda m: m * 60.0),  # issued at
    st.integers(0, 30),  # start, minutes after issue
    st.integers(0, 30),  # length in minutes
)


@given(st.lists(command, min_size=1, max_size=12), st.randoms())
def test_the_book_does_not_depend_on_read_order(commands: list, rnd) -> None:  # type: ignore[no-untyped-def]
    """A replay after a restart reads the same commands; with issue times apart, any
    order books the same leases."""
    issued = {c[1] for c in commands}
    commands = [c for c in commands if c[1] in issued]
    by_issue = {c[1]: c for c in commands}  # one command per issue time
    items = list(by_issue.values())

    def book_of(order: list) -> LeaseBook:  # type: ignore[type-arg]
        book = LeaseBook()
        for action, at, start, length in order:
            s = at + 60.0 + start * 60.0
            book.add(f"{action}{at}", "m", action, issued_at=at, start=s, end=s + length * 60.0)
        return book

    shuffled = items[:]
    rnd.shuffle(shuffled)
    a, b = book_of(items), book_of(shuffled)
    for t in range(0, 4000, 30):
        assert a.wanted("m", float(t)) == b.wanted("m", float(t)), t


def test_breaker_opens_probes_and_closes() -> None:
    b = CircuitBreaker(failures=3, cooldown=1.0)
    assert b.failure(0.0) is None and b.failure(0.1) is None
    assert b.failure(0.2) == "open" and not b.allow(0.5)
    assert b.allow(1.3)  # the probe
    assert not b.allow(1.31)  # one at a time
    assert b.success(1.4) == "closed" and b.allow(1.5)
    assert b.opened == 1
