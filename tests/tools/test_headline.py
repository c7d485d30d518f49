"""The demo's headline: warmcast at equal memory against hybrid and fixed keep-alive."""

from __future__ import annotations

from tools.demo import SAMPLE, SAMPLE_T0
from tools.fleetsim import load_slice
from tools.headline import Headline, compute, fixed_to_match


def test_the_shortest_matching_keep_alive_is_chosen() -> None:
    fixed = [(60, 30, 900), (10, 90, 100), (20, 50, 250), (30, 45, 400)]
    assert fixed_to_match(fixed, 50) == (20, 50, 250)
    assert fixed_to_match(fixed, 44) == (60, 30, 900)
    assert fixed_to_match(fixed, 29) is None


def test_headline_on_a_slice_agrees_with_its_backtest() -> None:
    from tools.backtest import run_backtest

    trace = load_slice(str(SAMPLE), minutes=90, t0=SAMPLE_T0)
    h = compute(trace, 1.0, knobs=(0.5, 1.0, 4.0), fixed_minutes=(5, 10, 30, 120))
    result = run_backtest(trace, ["hybrid", "warmcast", "fixed:30"], knobs=[1.0], progress=False)
    assert h.cold_starts == result.run("warmcast@1").score.cold_starts
    assert h.hybrid_cold_starts == result.run("hybrid").score.cold_starts
    assert h.ratio_at_hybrid_memory is None or h.ratio_at_hybrid_memory > 0
    if h.fixed_minutes is not None:
        assert h.fixed_cold_starts is not None and h.fixed_cold_starts <= h.cold_starts
    text = h.text()
    assert "warmcast vs hybrid at equal memory" in text
    assert "fixed keep-alive" in text


def test_text_when_nothing_matches() -> None:
    h = Headline(1.0, 5, 100, 10, 50, None, "curve needs more memory than this", None, None, None)
    text = h.text()
    assert "no reading (curve needs more memory than this)" in text
    assert "no fixed keep-alive up to 360 min matches" in text
