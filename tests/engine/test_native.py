"""The compiled engine (engine/native.py) against its sources: the docstring examples run
against the form in use, the form in use is all compiled or all source, and the compiled
and the pure-Python engine decide alike and read each other's checkpoints."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine import native
from engine.checkpoint import PartitionState, pack, restore
from engine.core import WarmupEngine
from engine.native import COMPILED, PURE_ENV, source_of
from engine.policies import HybridHistogram

SAMPLE = Path(__file__).resolve().parents[2] / "tools" / "samples" / "azure2019_150fn_4h.csv.gz"

# Run in a child process on the pure-Python engine: decides over the first events of the
# shipped sample, prints the command ids, and writes the engine's state as a checkpoint
# carries it.
CHILD = """
import sys, zlib, orjson
from engine import native
from engine.checkpoint import PartitionState, pack, restore
from tests.engine.test_native import decide
ids, engine = decide()
if len(sys.argv) > 2:  # read the parent's checkpoint, go on deciding from it
    theirs = restore(open(sys.argv[2], "rb").read()).engine
    ids += [c.command_id for c in theirs.observe("after", 1e9)]
open(sys.argv[1], "wb").write(zlib.compress(pack(PartitionState(engine))))
print(orjson.dumps({"engine": native.describe(), "ids": ids}).decode())
"""


def examples(module: str) -> list[doctest.DocTest]:
    """The docstring examples of ``module``'s source, with the imported module's names
    (a compiled module does not keep its docstrings)."""
    name = f"_source_of_{module}"
    spec = importlib.util.spec_from_file_location(name, source_of(module))
    assert spec is not None and spec.loader is not None
    source = importlib.util.module_from_spec(spec)
    sys.modules[name] = source  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(source)
    finally:
        del sys.modules[name]
    running = vars(importlib.import_module(module))
    found = doctest.DocTestFinder().find(source, module, module=source, globs=running)
    return [t for t in found if t.examples]


@pytest.mark.parametrize("module", COMPILED)
def test_docstring_examples(module: str) -> None:
    tests = examples(module)
    assert tests, f"{module} has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_the_form_in_use_is_all_compiled_or_all_source() -> None:
    loaded = {importlib.import_module(m).__file__ for m in COMPILED}
    if native.PURE_REASON is None:
        assert all(path and not path.endswith(".py") for path in loaded)
    else:
        assert loaded == {str(source_of(m)) for m in COMPILED}


def decide(n: int = 3000) -> tuple[list[str], WarmupEngine]:
    """Command ids of the hybrid policy over the sample's first ``n`` events."""
    from tools.traces import load_trace

    engine = WarmupEngine(HybridHistogram())
    ids: list[str] = []
    for ts, model_id, count in load_trace(SAMPLE).events[:n]:
        ids += [c.command_id for c in engine.observe(model_id, ts, count)]
    ids += [c.command_id for c in engine.advance(load_trace(SAMPLE).events[n][0])]
    return ids, engine


def test_pure_and_running_engine_decide_alike_and_share_checkpoints(tmp_path: Path) -> None:
    ours, engine = decide()
    mine = tmp_path / "mine.ckpt"
    mine.write_bytes(zlib.compress(pack(PartitionState(engine))))  # as a checkpoint holds it
    theirs = tmp_path / "theirs.ckpt"
    env = {**os.environ, PURE_ENV: "1"}
    repo = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(theirs), str(mine)],
        cwd=repo,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    child = orjson.loads(done.stdout)
    assert child["engine"].startswith("pure Python")
    after = [c.command_id for c in restore(mine.read_bytes()).engine.observe("after", 1e9)]
    assert len(ours) > 100
    assert child["ids"] == ours + after  # same decisions, and ours went on alike there
    restored = restore(theirs.read_bytes()).engine  # and theirs loads here
    assert restored.leases == engine.leases
    assert restored.last_seen == engine.last_seen
    assert [c.command_id for c in restored.observe("after", 1e9)] == after


def test_the_engine_runs_from_source_when_asked_or_when_a_source_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PURE_ENV, "1")
    assert native.why_pure() == f"{PURE_ENV} is set"
    monkeypatch.setenv(PURE_ENV, "0")  # "0" is not set
    manifest = tmp_path / "native.json"
    monkeypatch.setattr(native, "MANIFEST", manifest)
    assert "not compiled" in (native.why_pure() or "")
    built = {m: native.digest(source_of(m)) for m in COMPILED}
    monkeypatch.setattr(native, "_extension_of", lambda source: True)
    manifest.write_bytes(orjson.dumps(built))
    assert native.why_pure() is None
    manifest.write_bytes(orjson.dumps({**built, "engine.core": "0" * 64}))
    assert native.why_pure() == "core.py changed since it was compiled (rebuild: make native)"
    monkeypatch.setattr(native, "_extension_of", lambda source: source.name != "lease.py")
    manifest.write_bytes(orjson.dumps(built))
    assert native.why_pure() == "engine.lease has no compiled form"


# The same for the shadow policies a checkpoint carries: a child on the pure-Python engine
# scores two candidates over the sample's first events and writes them; each side goes on
# from the other's state.
SHADOW_CHILD = """
import sys, zlib, orjson
from engine import native
from engine.checkpoint import PartitionState, pack, restore
from tests.engine.test_native import go_on, shadowed
shadows = shadowed()
scores = shadows.scores(end_minute=10**6)
state = PartitionState(shadows.engines["hybrid"], shadows=shadows)
open(sys.argv[1], "wb").write(zlib.compress(pack(state)))
theirs = restore(open(sys.argv[2], "rb").read()).shadows
print(orjson.dumps({"engine": native.describe(), "scores": scores, "on": go_on(theirs)}).decode())
"""


def shadowed(n: int = 2000) -> Any:
    """Two candidates (fixed:1 and hybrid) fed the sample's first ``n`` events."""
    from engine.policies import FixedKeepAlive
    from engine.shadow import ShadowPolicies
    from tools.traces import load_trace

    shadows = ShadowPolicies({"fixed:1": FixedKeepAlive(1), "hybrid": HybridHistogram()})
    for ts, model_id, count in load_trace(SAMPLE).events[:n]:
        shadows.observe(model_id, ts, count)
    return shadows


def go_on(shadows: Any) -> dict[str, Any]:
    """The candidates' scores after the sample's next 500 events."""
    from tools.traces import load_trace

    for ts, model_id, count in load_trace(SAMPLE).events[2000:2500]:
        shadows.observe(model_id, ts, count)
    return dict(shadows.scores(end_minute=10**6))


def test_pure_and_running_engine_share_shadow_policies_in_checkpoints(tmp_path: Path) -> None:
    shadows = shadowed()
    scores = shadows.scores(end_minute=10**6)
    mine, theirs = tmp_path / "mine.ckpt", tmp_path / "theirs.ckpt"
    state = PartitionState(shadows.engines["hybrid"], shadows=shadows)
    mine.write_bytes(zlib.compress(pack(state)))
    done = subprocess.run(
        [sys.executable, "-c", SHADOW_CHILD, str(theirs), str(mine)],
        cwd=str(Path(__file__).resolve().parents[2]),
        env={**os.environ, PURE_ENV: "1"},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    child = orjson.loads(done.stdout)
    assert child["engine"].startswith("pure Python")
    assert child["scores"] == scores and scores["fixed:1"]["requests"] > 1000
    ours_on = go_on(restore(mine.read_bytes()).shadows)
    assert child["on"] == ours_on  # ours went on alike there
    assert go_on(restore(theirs.read_bytes()).shadows) == ours_on  # theirs goes on alike here
    assert ours_on["fixed:1"]["requests"] > scores["fixed:1"]["requests"]
