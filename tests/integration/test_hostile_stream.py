"""A hostile mixed stream through a real worker killed once: every message accounted.

The same run as ``warmcast hostile`` (tools/hostile.py), smaller: oversize messages, every
codec, forwarded and unkeyed events, malformed and future-stamped ones, bad items among
good ones, metric events and forged operator controls, with the worker killed with
SIGKILL half-way and started again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.hostile import CODECS, HostileConfig, run_hostile

pytestmark = pytest.mark.integration


async def test_a_hostile_stream_ends_processed_or_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = HostileConfig(
        messages=4000, oversize=6, forged=9, kill=True, bootstrap=kafka_bootstrap, timeout=300
    )
    report = await run_hostile(config, tmp_path)
    log = Path(report["worker_log"])
    assert report["checks"] == dict.fromkeys(report["checks"], True), (
        f"{report}\n{log.read_text()[-3000:] if log.exists() else ''}"
    )
    assert report["messages"] == 4000
    assert set(report["codecs"]) == set(CODECS), "every codec was sent"
    assert report["kinds"]["oversize_usage"] + report["kinds"]["oversize_metric"] == 6
    assert report["killed_after_messages"], "the worker was killed half-way"
    assert report["dead_letters_unique"] == report["bad_items_expected"] > 0
    assert report["requests_lost"] == report["requests_redelivered"] == 0 < report["requests_seen"]
