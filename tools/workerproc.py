"""A ``warmcast worker`` started as a subprocess on topics of its own (bench and soak)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cli_command(*args: str) -> list[str]:
    """``warmcast ARGS`` as a subprocess of this interpreter. ``-P``: the caller's
    directory is not put on the module path, so that a ``tools`` or ``agents`` package of
    its own cannot stand in for warmcast's.

    >>> cli_command("worker")[1:]
    ['-P', '-m', 'tools.cli', 'worker']
    """
    return [sys.executable, "-P", "-m", "tools.cli", *args]


def start_worker(
    bootstrap: str,
    ns: str,
    workdir: Path,
    *,
    port: int,
    partitions: int,
    policy: str,
    extra_env: dict[str, str] | None = None,
    new_session: bool = False,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a worker in namespace ``ns`` with its web server on ``port``, its data and
    its log (returned) under ``workdir``; ``extra_env`` adds or overrides settings."""
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        WARMCAST_TOPIC_NAMESPACE=ns,
        WARMCAST_APP_ID=f"{ns}-app",
        WARMCAST_WEB_PORT=str(port),
        WARMCAST_DATA_DIR=str(workdir / ns),
        WARMCAST_PARTITIONS=str(partitions),
        WARMCAST_POLICY=policy,
        WARMCAST_LOG_LEVEL="warning",
    )
    env.update(extra_env or {})
    log_path = workdir / f"{ns}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cli_command("worker"),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    return process, log_path
