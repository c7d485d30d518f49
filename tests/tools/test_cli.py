"""The command line as a user starts it: its version, and the worker's command from a
directory with packages of its own named like warmcast's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import warmcast
from tools.cli import main
from tools.workerproc import cli_command


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"warmcast {warmcast.__version__}"


def test_the_worker_command_does_not_depend_on_the_callers_directory(tmp_path: Path) -> None:
    for package in ("tools", "agents", "engine"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("raise ImportError('not warmcast')\n")
    started = subprocess.run(
        [*cli_command("worker", "--help")], cwd=tmp_path, capture_output=True, timeout=120
    )
    assert started.returncode == 0, started.stderr.decode()[-2000:]
    assert b"worker" in started.stdout
    # without -P the caller's directory comes first: its tools package stands in
    shadowed = subprocess.run(
        [cli_command()[0], "-m", "tools.cli", "--help"], cwd=tmp_path, capture_output=True
    )
    assert shadowed.returncode != 0 and b"not warmcast" in shadowed.stderr
