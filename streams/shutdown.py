"""A stop that ends within ``WARMCAST_SHUTDOWN_TIMEOUT_SECONDS``, whatever the broker does.

Each step of the worker's stop that waits on the broker (messages waiting for their
deliveries, queued records, the producer's flush) waits only for its share of what is
left of the time (:class:`Deadline`); what could not be delivered by then is logged, and
the input messages behind it stay uncommitted, to be read again. Should a stop still hang
past the whole time, a watchdog thread (:func:`start_watchdog`) logs what was left and ends
the process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Exit status of a stop the watchdog had to end.
WATCHDOG_EXIT_STATUS = 70


class Deadline:
    """The time left until a moment ``seconds`` from now (monotonic clock).

    >>> d = Deadline(10.0)
    >>> 9.0 < d.left() <= 10.0, 4.0 < d.left(0.5) <= 5.0
    (True, True)
    """

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, share: float = 1.0) -> float:
        """``share`` of the seconds left (at least a tenth of a second)."""
        return max((self.end - time.monotonic()) * share, 0.1)


def start_watchdog(seconds: float, report: Callable[[], list[str]]) -> threading.Timer:
    """End the process if it is still running ``seconds`` from now, logging ``report()``
    (what could not be delivered) first."""

    def fire() -> None:
        try:
            lines = report()
        except Exception as exc:  # read from another thread: best effort
            lines = [f"(could not list it: {exc!r})"]
        log.error(
            "the worker did not stop within %.0fs; exiting now%s",
            seconds,
            "".join(f"\n  not delivered: {line}" for line in lines),
        )
        logging.shutdown()
        os._exit(WATCHDOG_EXIT_STATUS)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer
