"""Who may command the fleet: signed control records, fresh and used once.

A control record's value (a :class:`~schemas.control.ControlCommand`, JSON) is signed with
HMAC-SHA256 under the control key (``WARMCAST_CONTROL_KEY``), over the exact bytes of the
value; the signature travels in the record header ``warmcast.signature`` as
``sha256=<64 hex digits>``. A worker carries a record out only when

- it is on partition 0 of the control topic (its offsets are then the one order of
  every command),
- its signature is the key's (:func:`verify`),
- it was signed recently, by the ``ts`` inside the signed value, and not in the future,
- and its command id has not been seen before (:class:`ReplayGuard`).

Anything else is refused with one of :data:`REASONS`, never carried out.

>>> key = b"a control key of at least 32 bytes"
>>> body = b'{"command":"resume","id":"c1","ts":1700000000.0}'
>>> signature = sign(body, key)
>>> signature[:7], len(signature)
(b'sha256=', 71)
>>> verify(body, signature, key)   # genuine: no exception
>>> verify(body.replace(b"resume", b"emergency_stop"), signature, key)
Traceback (most recent call last):
...
streams.control_auth.ControlRefused: bad_signature: the signature is not the control key's
>>> guard = ReplayGuard(max_age=300.0, max_future=60.0)
>>> guard.admit("c1", 1_700_000_000.0, now=1_700_000_001.0) is None
True
>>> guard.admit("c1", 1_700_000_000.0, now=1_700_000_002.0)
'replayed'
>>> guard.admit("c2", 1_600_000_000.0, now=1_700_000_002.0)
'stale'
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable

from schemas.control import ControlCommand

SIGNATURE_HEADER = "warmcast.signature"
SCHEME = b"sha256="
#: The partition of the control topic whose records are carried out.
CONTROL_PARTITION = 0
#: Why a control record was refused (labels of ``warmcast_control_rejected_total``).
REASONS = (
    "no_key",  # this worker has no control key: it applies no record
    "unsigned",
    "bad_signature",
    "wrong_partition",
    "stale",  # signed longer ago than the age bound
    "future",  # signed ahead of the wall clock by more than the skew bound
    "replayed",  # its command id was seen before
)


class ControlRefused(ValueError):
    """A control record that is not carried out; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


def sign(body: bytes, key: bytes) -> bytes:
    """The ``warmcast.signature`` header value of a control record's value."""
    return SCHEME + hmac.new(key, body, hashlib.sha256).hexdigest().encode()


def signed(command: ControlCommand, key: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of a control record carrying ``command``, signed.

    >>> value, headers = signed(ControlCommand(command="resume", id="c1", ts=1.0), b"k" * 32)
    >>> import json
    >>> {k: v for k, v in json.loads(value).items() if k in ("command", "id", "ts")}
    {'command': 'resume', 'id': 'c1', 'ts': 1.0}
    >>> verify(value, signature_of(headers), b"k" * 32)
    """
    value = command.model_dump_json().encode()
    return value, [(SIGNATURE_HEADER, sign(value, key))]


def key_id(key: bytes) -> str:
    """A short, non-secret name of a control key, for logs and ``GET /control``.

    >>> key_id(b"k" * 32)
    'b1ea0ca4'
    """
    return hashlib.sha256(b"warmcast-control-key\x00" + key).hexdigest()[:8]


def signature_of(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    """The signature header of a record, if it has one.

    >>> signature_of([("other", b"x"), ("warmcast.signature", b"sha256=00")])
    b'sha256=00'
    >>> signature_of(None) is None
    True
    """
    for name, value in headers or ():
        if name == SIGNATURE_HEADER:
            return bytes(value)
    return None


def verify(body: bytes, signature: bytes | None, key: bytes) -> None:
    """Raise :class:`ControlRefused` unless ``signature`` is the key's over ``body``
    (compared in constant time)."""
    if not key:
        raise ControlRefused("no_key", "no control key is configured: no record is applied")
    if not signature:
        raise ControlRefused("unsigned", f"no {SIGNATURE_HEADER} header")
    if not hmac.compare_digest(signature.strip(), sign(body, key)):
        raise ControlRefused("bad_signature", "the signature is not the control key's")


class ReplayGuard:
    """Refuses control records signed too long ago, in the future, or seen before.

    Live, a record's signed time ``ts`` is judged against the wall clock ``now``: at most
    ``max_age`` seconds old, at most ``max_future`` ahead. In the history a worker reads
    when it starts (``history=True``), records are old by nature: one is stale when it
    was signed longer before the newest record admitted so far than a live record could
    have been (``max_age + max_future``), so an old record written again after newer ones
    is refused there too. Ids are remembered while records of their age could still be
    admitted, and at most ``capacity`` of them (the oldest go first).

    >>> g = ReplayGuard(max_age=300.0, max_future=60.0)
    >>> g.admit("stop", 1000.0, now=5000.0, history=True) is None
    True
    >>> g.admit("resume", 4000.0, now=5000.0, history=True) is None
    True
    >>> g.admit("stop-again", 1000.0, now=5000.0, history=True)   # written after resume
    'stale'
    >>> g.admit("far", 9000.0, now=5000.0)
    'future'
    """

    def __init__(self, max_age: float, max_future: float, capacity: int = 10_000) -> None:
        self.max_age = max_age
        self.max_future = max_future
        self.capacity = capacity
        self.seen: OrderedDict[str, float] = OrderedDict()  # command id -> signed time
        self.newest: float | None = None  # newest signed time admitted

    def check(self, command_id: str, ts: float, now: float, *, history: bool = False) -> str | None:
        """Why a record would be refused (``None``: it would be admitted)."""
        if ts > now + self.max_future:
            return "future"
        if history:
            horizon = (ts if self.newest is None else self.newest) - self.max_age
            horizon -= self.max_future
        else:
            horizon = now - self.max_age
        if ts < horizon:
            return "stale"
        if command_id in self.seen:
            return "replayed"
        return None

    def admit(self, command_id: str, ts: float, now: float, *, history: bool = False) -> str | None:
        """:meth:`check`, and remember the record when it is admitted."""
        refused = self.check(command_id, ts, now, history=history)
        if refused is None:
            self.remember(command_id, ts)
        return refused

    def remember(self, command_id: str, ts: float) -> None:
        self.seen[command_id] = ts
        self.seen.move_to_end(command_id)
        self.newest = ts if self.newest is None else max(self.newest, ts)
        horizon = self.newest - self.max_age - self.max_future
        while self.seen and (
            len(self.seen) > self.capacity or next(iter(self.seen.values())) < horizon
        ):
            self.seen.popitem(last=False)


__all__ = [
    "CONTROL_PARTITION",
    "REASONS",
    "SIGNATURE_HEADER",
    "ControlRefused",
    "ReplayGuard",
    "key_id",
    "sign",
    "signature_of",
    "signed",
    "verify",
]
