"""A tiny progress bar for long offline runs: drawn on stderr, and only on a terminal.

>>> import io
>>> out = io.StringIO()
>>> with Progress(4, "demo", stream=out, enabled=True, min_interval=0.0) as bar:
...     bar.update(2)
...     bar.update(2)
>>> out.getvalue().splitlines()[-1].endswith("4/4")
True
>>> Progress(10, stream=io.StringIO()).enabled  # not a terminal: stays silent
False
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """``label [#####-----]  50% 5/10``, redrawn at most every ``min_interval`` seconds."""

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 30,
        min_interval: float = 0.2,
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.width = width
        self.min_interval = min_interval
        self.done = 0
        self._last_draw = -float("inf")
        self._drawn = False

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval or self.done >= self.total:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        frac = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = round(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {frac:4.0%} {self.done}/{self.total}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
