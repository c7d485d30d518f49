"""A real MLServer for the executor's tests, benchmark and demo.

MLServer (from PyPI) runs in an environment of its own, since its dependencies may clash
with warmcast's: :func:`ensure_venv` creates it once under ``~/.cache/warmcast/`` (or
``WARMCAST_MLSERVER_VENV``) and reuses it. :class:`MLServer` starts it on 127.0.0.1 with
a model repository of models served by the runtime in ``tests/mlserver_runtime`` (a load
that takes a configurable time), nothing loaded at start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.broker import free_port

MLSERVER_VERSION = "1.7.1"
REPO = Path(__file__).resolve().parents[1]
RUNTIME_DIR = REPO / "tests" / "mlserver_runtime"
RUNTIME = "sleepy.SleepyRuntime"


class MLServerUnavailable(RuntimeError):
    """MLServer could not be installed; ``offline``: the package index did not answer."""

    def __init__(self, message: str, *, offline: bool) -> None:
        super().__init__(message)
        self.offline = offline


def venv_dir() -> Path:
    configured = os.environ.get("WARMCAST_MLSERVER_VENV")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "warmcast" / "mlserver-venv"


def _index_answers(timeout: float = 10.0) -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/mlserver/", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except Exception:
        return False


def ensure_venv(log: Any = None) -> Path:
    """The Python of MLServer's own environment, created on first use (built in a
    temporary folder, then moved into place: a half-made one is never used)."""
    root = venv_dir()
    stamp = root / ".warmcast-installed"
    python = root / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == MLSERVER_VERSION:
        return python
    root.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        base = os.environ.get("WARMCAST_MLSERVER_PYTHON", sys.executable)
        subprocess.run([base, "-m", "venv", str(building)], check=True, capture_output=True)
        print(f"installing MLServer {MLSERVER_VERSION} into {root} (once)", file=log or sys.stderr)
        done = subprocess.run(
            [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
             f"mlserver=={MLSERVER_VERSION}"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise MLServerUnavailable(
                f"pip could not install mlserver=={MLSERVER_VERSION}: {done.stderr.strip()[-600:]}",
                offline=not _index_answers(),
            )
        (building / ".warmcast-installed").write_text(MLSERVER_VERSION)
        if root.exists():
            shutil.rmtree(root)
        building.rename(root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return python


#: MLServer's command line, run by the environment's Python (its scripts name the
#: interpreter by the path it was built at)
MAIN = "import sys; from mlserver.cli import main; sys.argv[0] = 'mlserver'; sys.exit(main())"


class MLServer:
    """An MLServer process on 127.0.0.1 serving ``models`` (name -> load seconds)."""

    def __init__(self, models: dict[str, float], port: int | None = None) -> None:
        self.python = ensure_venv()
        self.models = models
        self.port = port or free_port()
        self.grpc_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="warmcast-mlserver-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "mlserver.log"
        for name, seconds in models.items():
            folder = self.root / "models" / name
            folder.mkdir(parents=True)
            settings = {
                "name": name,
                "implementation": RUNTIME,
                "parameters": {"extra": {"load_seconds": seconds}},
            }
            (folder / "model-settings.json").write_text(json.dumps(settings))

    @property
    def target(self) -> str:
        return f"kserve-v2://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> MLServer:
        settings = {
            "host": "127.0.0.1",
            "http_port": self.port,
            "grpc_port": self.grpc_port,
            "metrics_endpoint": None,
            "parallel_workers": 0,
            "load_models_at_startup": False,
            "debug": False,
        }
        repo = self.root / "models"
        (repo / "settings.json").write_text(json.dumps(settings))
        env = {**os.environ, "PYTHONPATH": str(RUNTIME_DIR)}
        env.pop("VIRTUAL_ENV", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.python), "-c", MAIN, "start", str(repo)],
                cwd=repo,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"MLServer exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"MLServer not ready within {timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v2/health/live", timeout=2):
                return True
        except Exception:
            return False

    def index(self) -> dict[str, str]:
        """Model name -> state, as the repository index says."""
        request = urllib.request.Request(
            self.url + "/v2/repository/index",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return {e["name"]: e.get("state", "") for e in json.loads(response.read())}

    def ready_models(self) -> set[str]:
        return {name for name, state in self.index().items() if state == "READY"}

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> MLServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MLSERVER_VERSION", "MLServer", "MLServerUnavailable", "ensure_venv", "venv_dir"]
