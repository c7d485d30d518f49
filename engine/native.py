"""The compiled hot path: which engine modules are compiled, and whether they are in use.

``pip install`` compiles the modules named in :data:`COMPILED` with mypyc when a C compiler
is at hand (``setup.py``), next to their sources, and records a digest of each source it
compiled in ``engine/native.json``. The compiled modules are the same code as the sources,
two to three times faster; they are used only while every one of them is there and every
source still matches its digest. Otherwise (a source edited since the build, a build
without a compiler, or ``WARMCAST_PURE_PYTHON=1``), all of them are imported from their
``.py`` files: the two forms never mix in one process.

Rebuild after editing an engine module with ``make native`` (or ``pip install -e .``).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

import orjson

#: Engine modules on the hot path of every usage event, compiled together.
COMPILED = (
    "engine.timebase",
    "engine.lease",
    "engine.sketch",
    "engine.rolling",
    "engine.health",
    "engine.policies",
    "engine.core",
    "engine.feed",
    "engine.shadow",
)
#: Where a build records the digests of the sources it compiled.
MANIFEST = Path(__file__).with_name("native.json")
#: Set (to anything but ``0`` or empty) to run the pure-Python engine.
PURE_ENV = "WARMCAST_PURE_PYTHON"

_HERE = Path(__file__).parent


def source_of(module: str) -> Path:
    """The ``.py`` file of one of the :data:`COMPILED` modules.

    >>> source_of("engine.core").name
    'core.py'
    """
    return _HERE / f"{module.rpartition('.')[2]}.py"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest() -> dict[str, str]:
    """``module -> source digest`` of the last build (empty: none compiled)."""
    try:
        recorded = orjson.loads(MANIFEST.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def why_pure() -> str | None:
    """Why the engine runs as pure Python (``None``: it runs compiled)."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    recorded = manifest()
    if not recorded:
        return "not compiled (no C compiler at install, or installed without building)"
    for module in COMPILED:
        source = source_of(module)
        if not _extension_of(source):
            return f"{module} has no compiled form"
        if recorded.get(module) != digest(source):
            return f"{source.name} changed since it was compiled (rebuild: make native)"
    return None


def _extension_of(source: Path) -> bool:
    stem = source.with_suffix("")
    return any(
        Path(f"{stem}{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


class _FromSource:
    """Finds the compiled modules' ``.py`` files, ahead of their compiled forms."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, source_of(fullname))


def select() -> str | None:
    """Decide, before any compiled module is imported, which form this process runs
    (done once, when this module is imported): returns why it is pure Python (``None``:
    compiled)."""
    global PURE_REASON
    PURE_REASON = reason = why_pure()
    if reason is not None and not any(isinstance(f, _FromSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _FromSource())
    return reason


def describe() -> str:
    """One line for logs and reports: which engine runs (``compiled (mypyc)``, or
    ``pure Python: `` and why)."""
    return "compiled (mypyc)" if PURE_REASON is None else f"pure Python: {PURE_REASON}"


#: Why this process runs the pure-Python engine (``None``: compiled); see :func:`select`.
PURE_REASON: str | None = None

select()  # on import, which ``engine/__init__.py`` does before any compiled module
