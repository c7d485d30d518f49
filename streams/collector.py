"""The worker's garbage-collector settings: short pauses on a worker that holds many
served models."""

from __future__ import annotations

import gc


def settle_garbage_collector(young_threshold: int) -> None:
    """Keep the collector's pauses short on a worker that holds many served models.

    What exists once the worker is up (modules, Faust, its own objects) is moved out of
    the collector's sight (``gc.freeze``), and the youngest generation is collected every
    ``young_threshold`` allocations instead of every 700, so that fewer objects reach the
    older generations whose collections scan everything.

    >>> before = gc.get_threshold()
    >>> settle_garbage_collector(10_000)
    >>> gc.get_threshold()[0], gc.get_freeze_count() > 0
    (10000, True)
    >>> gc.set_threshold(*before); gc.unfreeze()
    """
    gc.collect()
    gc.freeze()
    if young_threshold > 0:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)
