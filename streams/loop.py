"""The worker's event loop: uvloop when it is installed (less overhead per message and
per network read than asyncio's own loop), else asyncio's."""

from __future__ import annotations

import asyncio
import importlib.util


def use_event_loop(name: str = "uvloop") -> str:
    """Make new event loops ``name``'s (``uvloop`` or ``asyncio``); returns the one in use.

    Call it before the worker creates its loops (the Faust worker, and the consumer thread
    it starts, both ask the policy).

    >>> use_event_loop("asyncio")
    'asyncio'
    """
    if name == "uvloop" and importlib.util.find_spec("uvloop") is not None:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    if name not in ("uvloop", "asyncio"):
        raise ValueError(f"unknown event loop {name!r}: uvloop or asyncio")
    asyncio.set_event_loop_policy(None)
    return "asyncio"
