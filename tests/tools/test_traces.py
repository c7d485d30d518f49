"""Trace loaders on tiny files: both Azure layouts, gzip, CSV mappings, JSONL, sniffing."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from tools.traces import load_trace, sniff_format

DAY = 1731628800.0  # 2024-11-15T00:00:00Z


def write(path: Path, text: str, *, gz: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_azure_sampled_layout_gzip(tmp_path: Path) -> None:
    text = (
        "HashFunction,HashApp,HashOwner,minute_1,minute_2,minute_3,minute_4\n"
        "f1,a1,o1,2,0,0,1\n"
        "f2,a2,o2,0,3,0,5\n"
    )
    path = write(tmp_path / "inv.csv.gz.data", text, gz=True)  # no telling name: magic bytes
    assert sniff_format(path) == "azure"
    trace = load_trace(path)
    assert trace.fmt == "azure"
    assert trace.events == [
        (0.0, "f1", 2),
        (60.0, "f2", 3),
        (180.0, "f1", 1),
        (180.0, "f2", 5),
    ]
    assert (trace.t0, trace.end_minute, trace.requests, trace.models) == (0.0, 3, 11, 2)
    shifted = load_trace(path, t0=DAY)
    assert shifted.events[1] == (DAY + 60.0, "f2", 3)
    assert shifted.t0 == DAY


def test_azure_original_layout_joins_ids_when_functions_repeat(tmp_path: Path) -> None:
    text = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\no1,a1,f,http,1,0,0\no2,a2,f,timer,0,0,4\n"
    trace = load_trace(write(tmp_path / "d01.csv", text))
    assert trace.fmt == "azure"
    assert trace.events == [(0.0, "o1/a1/f", 1), (120.0, "o2/a2/f", 4)]
    assert trace.end_minute == 2


def test_azure_original_layout_unique_functions(tmp_path: Path) -> None:
    text = "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f1,http,0,7\no,a,f2,http,1,0\n"
    trace = load_trace(write(tmp_path / "d.csv", text), fmt="azure")
    assert trace.events == [(0.0, "f2", 1), (60.0, "f1", 7)]


def test_request_csv_alibaba_names_and_skipped_rows(tmp_path: Path) -> None:
    text = (
        "gmt_create,predict_status,checkpoint_model_version_id\n"
        "2024-11-15 00:01:30,SUCCEED,M1\n"
        "2024-11-15 00:00:10,SUCCEED,M2\n"
        "2024-11-15 00:00:10,SUCCEED,M1\n"
        "2024-11-15 00:02:00,PENDING,\n"
        "not a time,SUCCEED,M1\n"
    )
    path = write(tmp_path / "req.csv.gz", text, gz=True)
    assert sniff_format(path) == "csv"
    trace = load_trace(path)
    assert trace.fmt == "csv"
    assert trace.events == [(DAY + 10, "M2", 1), (DAY + 10, "M1", 1), (DAY + 90, "M1", 1)]
    assert trace.t0 == DAY + 10
    assert trace.end_minute == 1
    assert trace.skipped == {"missing model id": 1, "bad time": 1}
    kept = load_trace(path, missing_model="(none)")
    assert kept.events[-1] == (DAY + 120, "(none)", 1)
    assert kept.end_minute == 1  # 110 s after t0


@pytest.mark.parametrize(
    ("cell", "time_format"),
    [
        ("1731628800", "auto"),
        ("1731628800000", "auto"),
        ("1731628800000", "ms"),
        ("1731628800.0", "s"),
        ("2024-11-15T01:00:00+01:00", "auto"),
        ("2024-11-15T00:00:00Z", "iso"),
        ("15/11/2024 00:00", "%d/%m/%Y %H:%M"),
    ],
)
def test_request_csv_mapping_and_time_formats(tmp_path: Path, cell: str, time_format: str) -> None:
    text = f"when;who;n\n{cell};x;3\n"
    path = tmp_path / "r.csv"
    path.write_text(text.replace(";", ","))
    trace = load_trace(
        path, time_col="when", model_col="who", time_format=time_format, count_col="n"
    )
    assert trace.events == [(DAY, "x", 3)]


def test_request_csv_unknown_columns_say_so(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "a,b\n1,2\n")
    with pytest.raises(ValueError, match="time"):
        load_trace(path)
    with pytest.raises(ValueError, match="no model column"):
        load_trace(path, time_col="a", model_col="zz")


def test_jsonl_usage_events(tmp_path: Path) -> None:
    lines = [
        {"model_id": "b", "ts": DAY + 61.5, "count": 2, "cold": False},
        {"model_id": "a", "ts": "2024-11-15T00:00:00Z"},
        {"model_id": "a", "ts": "2024-11-15T00:00:30.250+00:00", "count": 1},
        {"model_id": "", "ts": DAY},
        {"model_id": "c", "ts": "yesterday"},
    ]
    text = "\n".join(orjson.dumps(x).decode() for x in lines) + "\n{broken\n\n"
    path = write(tmp_path / "usage.log", text, gz=True)
    assert sniff_format(path) == "jsonl"
    trace = load_trace(path)
    assert trace.fmt == "jsonl"
    assert trace.events == [(DAY, "a", 1), (DAY + 30.25, "a", 1), (DAY + 61.5, "b", 2)]
    assert (trace.t0, trace.end_minute) == (DAY, 1)
    assert trace.skipped == {"missing model id": 1, "bad time": 1, "bad json": 1}


def test_jsonl_by_name_and_explicit_t0(tmp_path: Path) -> None:
    path = write(
        tmp_path / "u.jsonl", '{"model_id": "a", "ts": 130}\n{"model_id": "a", "ts": 20}\n'
    )
    trace = load_trace(path, t0=0.0)
    assert trace.events == [(20.0, "a", 1), (130.0, "a", 1)]
    assert trace.end_minute == 2
    late = load_trace(path, t0=60.0)
    assert late.events == [(130.0, "a", 1)]
    assert late.skipped == {"before t0": 1}


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown trace format"):
        load_trace(write(tmp_path / "x", "a\n"), fmt="parquet")
