"""``warmcast tail`` as a process, reading messages with hostile model ids from a broker:
its output holds no raw control or bidirectional character, and one line per message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from streams.kafka import ensure_topics
from tests.integration.harness import REPO, namespace, produce, topic
from tests.tools.test_tail import HOSTILE
from tools.replay import settings_for

pytestmark = pytest.mark.integration


def warmup(i: int, model_id: str) -> dict[str, Any]:
    return {
        "command_id": f"c{i}",
        "model_id": model_id,
        "action": "warm",
        "issued_at": 1_700_000_000.0,
        "start": 1_700_000_060.0,
        "end": 1_700_000_660.0,
        "priority": 2,
        "reason": f"keep-alive {model_id}",
        "policy_version": "fixed-10/1",
    }


def tail(bootstrap: str, ns: str, *flags: str) -> str:
    reading = ["--from-beginning", "--limit", str(len(HOSTILE)), "--timeout", "30"]
    where = ["--bootstrap", bootstrap, "--namespace", ns]
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "tail", "warmup", *reading, *where, *flags],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("WARMCAST_")},
        capture_output=True,
        timeout=120,
        check=True,
    )
    return done.stdout.decode("utf-8")


def test_tail_escapes_hostile_model_ids_in_columns_and_json(kafka_bootstrap: str) -> None:
    ns = namespace()
    asyncio.run(ensure_topics(settings_for(kafka_bootstrap, ns)))
    docs = [warmup(i, model_id) for i, model_id in enumerate(HOSTILE)]
    messages = [(b"k", orjson.dumps(doc)) for doc in docs]  # one partition: in order
    asyncio.run(produce(kafka_bootstrap, topic(ns, "warmup"), messages))

    pretty = tail(kafka_bootstrap, ns, "--pretty")
    lines = pretty.split("\n")
    assert lines.pop() == ""
    assert len(lines) == 1 + len(HOSTILE)  # the header and one row per message
    assert [line for line in lines if not line.isprintable()] == []
    assert "m\\x1b[2J\\x1b[H" in lines[1]
    assert "fake\\u202egnp.exe" in pretty

    piped = tail(kafka_bootstrap, ns)
    lines = piped.split("\n")
    assert lines.pop() == ""
    assert all(line.isprintable() for line in lines)
    assert [orjson.loads(line) for line in lines] == docs
