"""The baseline reference tables of docs/evaluation.md, reproduced exactly from the data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.backtest import BacktestResult, run_backtest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AZURE = DATA / "azure-functions-2019" / "invocations_per_minute_1000fn_24h.csv.gz"
ALIBABA = DATA / "alibaba-genai-2024" / "requests_2024-11-15_to_2024-11-28.csv.gz"
BASELINES = ["fixed:10", "fixed:20", "fixed:60", "hybrid"]

# policy: (p75_cold_pct, cold_pct_overall, wasted_norm_pct, cold starts, requests)
AZURE_TABLE = {
    "fixed:10": ("50.00", "0.083", "100.0", 6017, 7235267),
    "fixed:20": ("33.33", "0.048", "125.5", 3497, 7235267),
    "fixed:60": ("25.00", "0.016", "179.1", 1159, 7235267),
    "hybrid": ("25.00", "0.020", "163.2", 1449, 7235267),
}
ALIBABA_TABLE = {
    "fixed:10": ("61.54", "15.740", "100.0", 1438, 9136),
    "fixed:20": ("60.00", "10.869", "152.6", 993, 9136),
    "fixed:60": ("57.14", "6.020", "279.0", 550, 9136),
    "hybrid": ("50.00", "4.192", "480.6", 383, 9136),
}


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"trace not found: {path} (shared/data is not beside the repository)")


@pytest.fixture(scope="module")
def azure() -> BacktestResult:
    _need(AZURE)
    return run_backtest(AZURE, BASELINES, train_minutes=480, progress=False)


@pytest.fixture(scope="module")
def alibaba() -> BacktestResult:
    _need(ALIBABA)
    # The reference counts the 9 requests without a model id as one more served model.
    return run_backtest(
        ALIBABA, BASELINES, train_minutes=10080, missing_model="(none)", progress=False
    )


def _row(result: BacktestResult, policy: str) -> tuple[str, str, str, int, int]:
    s = result.run(policy).score
    assert s.wasted_norm_pct is not None
    return (
        f"{s.p75_cold_pct:.2f}",
        f"{s.cold_pct_overall:.3f}",
        f"{s.wasted_norm_pct:.1f}",
        s.cold_starts,
        s.requests,
    )


@pytest.mark.parametrize("policy", BASELINES)
def test_azure_reference_table(azure: BacktestResult, policy: str) -> None:
    assert _row(azure, policy) == AZURE_TABLE[policy]


@pytest.mark.parametrize("policy", BASELINES)
def test_alibaba_reference_table(alibaba: BacktestResult, policy: str) -> None:
    assert _row(alibaba, policy) == ALIBABA_TABLE[policy]


def test_azure_trace_split(azure: BacktestResult) -> None:
    info = azure.trace
    assert (info["t0"], info["end_minute"], info["models"]) == (0.0, 1439, 1000)
    assert info["requests"] == 11639447
    assert info["scored_requests"] + info["train_requests"] == info["requests"]
    assert info["score_minutes"] == [480, 1439]


def test_alibaba_without_model_ids_skipped_by_default() -> None:
    _need(ALIBABA)
    result = run_backtest(ALIBABA, ["fixed:10"], train_minutes=10080, progress=False)
    assert result.trace["skipped_rows"] == {"missing model id": 9}
    assert result.run("fixed:10").score.requests == 9136 - 9
