"""Builds warmcast, compiling the engine's hot path with mypyc when it can.

The modules of ``engine.native.COMPILED`` are compiled into C extensions beside their
sources; the digest of each compiled source goes to ``engine/native.json``, which is how
the engine knows, at import, that its compiled form matches its code. With no C compiler
(or ``WARMCAST_PURE_PYTHON=1``) the build installs the pure-Python engine, which decides
exactly alike, only slower.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
PURE = os.environ.get("WARMCAST_PURE_PYTHON", "") not in ("", "0")


def compiled_modules() -> tuple[str, ...]:
    """``COMPILED`` of engine/native.py, read without importing the engine."""
    tree = ast.parse((HERE / "engine" / "native.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("engine/native.py names no COMPILED modules")


MODULES = compiled_modules()


class BuildNative(build_ext):
    """Compile what it can; record what was compiled only if all of it was."""

    def run(self) -> None:
        for ext in self.extensions:
            ext.optional = True  # no compiler: the pure-Python engine is installed
        super().run()
        outputs = [Path(self.get_ext_fullpath(m)) for m in MODULES]
        target = outputs[0].parent / "native.json"
        if all(p.exists() for p in outputs):
            digests = {
                m: hashlib.sha256(
                    (HERE / "engine" / f"{m.rpartition('.')[2]}.py").read_bytes()
                ).hexdigest()
                for m in MODULES
            }
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(digests, indent=1) + "\n")
        else:
            print("warmcast: engine not compiled; the pure-Python engine is used", file=sys.stderr)
            target.unlink(missing_ok=True)


def extensions() -> list[object]:
    if PURE:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("warmcast: mypyc not available; the pure-Python engine is used", file=sys.stderr)
        return []
    paths = [f"engine/{m.rpartition('.')[2]}.py" for m in MODULES]
    return list(mypycify(paths, opt_level="3", group_name="warmcast_native"))


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildNative})
