"""Tools some tests run that are not Python packages: a test that needs one skips without
it on a developer's machine and fails in CI (``CI`` set), which installs them all."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def need(path: str | None, why: str, ci_must: str = "CI installs it (.ci/run)") -> str:
    """``path`` when the tool is there; else a skip, or in CI a failure, saying ``why``
    and ``ci_must``."""
    if path is None:
        if in_ci():
            pytest.fail(f"{why}: {ci_must}", pytrace=False)
        pytest.skip(why)
    return path
