"""Checkpoints of a partition's learned state: sealed, signed, verified before anything is read.

A checkpoint holds a :class:`PartitionState` (the partition's engine with its policy,
analyzers, learners and leases, plus its metric anomaly learners) as a compressed pickle,
behind a JSON header that says what it covers, and signed with HMAC-SHA256::

    b"WCK1" | tag (32 bytes) | header length (4 bytes, big endian) | header | payload

The tag covers everything after it. :func:`unseal` checks the tag in constant time before
it even parses the header, and :func:`restore` rebuilds only the exact classes listed in
:mod:`engine.restorable` (the engine's, the river learners' and a few containers): a record
written without the key is never deserialised, and one written with it cannot name any
other callable either (``forbidden_class``).

>>> from engine.core import WarmupEngine
>>> from engine.policies import FixedKeepAlive
>>> engine = WarmupEngine(FixedKeepAlive(10))
>>> _ = engine.observe("llama", 125.0)
>>> header = CheckpointHeader(partition=3, offsets={"usage": 42}, policy="fixed:10")
>>> record = seal(pack(PartitionState(engine)), header, b"k3y")
>>> got_header, payload = unseal(record, b"k3y")
>>> got_header.offsets, restore(payload).engine.lease_of("llama")
({'usage': 42}, Lease(warm 3..13))
>>> unseal(record[:-1] + b"x", b"k3y")
Traceback (most recent call last):
...
engine.checkpoint.CheckpointRejected: bad_signature: the tag does not match the content
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
import time
import zlib
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import orjson

from engine.core import WarmupEngine
from engine.policies import Policy
from engine.promotion import Lineup
from engine.restorable import Unrestorable, resolve
from engine.shadow import OnlineScore, ShadowPolicies

MAGIC = b"WCK1"
#: 2: leases, histograms and engines pickled by their fields, which the pure-Python and the
#: compiled engine (engine/native.py) both read.
FORMAT_VERSION = 2
TAG_BYTES = 32
MAX_HEADER_BYTES = 64 * 1024
#: Largest uncompressed state :func:`restore` accepts by default.
MAX_STATE_BYTES = 512 * 1024 * 1024


class CheckpointRejected(ValueError):
    """A checkpoint that is not used; ``reason`` says why (a label for counters).

    Reasons: ``unsigned`` (not a checkpoint), ``bad_signature``, ``malformed``,
    ``mismatch`` (signed, but for another partition or namespace), ``too_large``,
    ``forbidden_class``, ``incompatible`` (does not load into this version's classes).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckpointHeader:
    """What a checkpoint covers: the usage partition, and for each input topic the next
    offset its state has not seen (``{"usage": 1200, "metrics": 87}``)."""

    partition: int
    offsets: dict[str, int]
    policy: str
    namespace: str = ""
    name: str = ""  # an operator's named snapshot; "" for the periodic checkpoint
    writer: str = ""
    created: float = field(default_factory=time.time)
    version: int = FORMAT_VERSION
    #: the policy active when it was written and the lineup's generation (promotions and
    #: rollbacks since the worker started from its settings), e.g. ``warmcast#1``
    policy_version: str = ""
    generation: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, raw: bytes) -> CheckpointHeader:
        """Parse a header (only ever called on a verified record).

        >>> CheckpointHeader.from_json(b'{"partition": 1, "offsets": {"usage": 5},'
        ...                            b' "policy": "hybrid", "created": 0}').offsets
        {'usage': 5}
        """
        try:
            doc = orjson.loads(raw)
            offsets = {str(k): int(v) for k, v in dict(doc["offsets"]).items()}
            return cls(
                partition=int(doc["partition"]),
                offsets=offsets,
                policy=str(doc["policy"]),
                namespace=str(doc.get("namespace", "")),
                name=str(doc.get("name", "")),
                writer=str(doc.get("writer", "")),
                created=float(doc.get("created", 0.0)),
                version=int(doc.get("version", FORMAT_VERSION)),
                policy_version=str(doc.get("policy_version", "")),
                generation=int(doc.get("generation", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointRejected("malformed", f"bad header: {exc}") from None


@dataclass(slots=True)
class PartitionState:
    """Everything a partition has learned.

    ``learned_policy`` is the learning policy set aside while an operator runs the
    partition on the safe fixed keep-alive; it comes back on resume. ``shadows`` are the
    candidate policies with their own learners (the policy active before a promotion
    among them), ``scored`` the active policy's online score and ``lineup`` which policy
    is active, which run beside it and the generation (engine/promotion.py). A
    checkpoint written before these existed restores with none of them.
    """

    engine: WarmupEngine
    anomalies: Any = None
    learned_policy: Policy | None = None
    shadows: ShadowPolicies | None = None
    scored: OnlineScore | None = None
    lineup: Lineup | None = None

    def __setstate__(self, state: Any) -> None:
        """Unpickled: the slots of the state, those it predates left at their defaults."""
        if isinstance(state, tuple):  # (instance dict, slots), as pickle keeps slots
            values = {**(state[0] or {}), **(state[1] or {})}
        else:
            values = dict(state)
        for f in fields(PartitionState):
            default = None if f.default is MISSING else f.default
            object.__setattr__(self, f.name, values.get(f.name, default))


def pack(state: PartitionState) -> bytes:
    """The state as a pickle (taken where nothing else mutates it, e.g. the event loop)."""
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def seal(pickled: bytes, header: CheckpointHeader, key: bytes, *, level: int = 6) -> bytes:
    """Compress a packed state and sign it with its header; CPU only, safe in a thread."""
    if not key:
        raise ValueError("a checkpoint key is needed to sign checkpoints")
    head = header.to_json()
    body = len(head).to_bytes(4, "big") + head + zlib.compress(pickled, level)
    return MAGIC + _tag(key, body) + body


def unseal(record: bytes, key: bytes) -> tuple[CheckpointHeader, bytes]:
    """Verify a sealed record; return its header and its still compressed payload.

    Raises :class:`CheckpointRejected`. Nothing of the record is parsed before its tag
    has been checked against ``key``.
    """
    if not key:
        raise ValueError("a checkpoint key is needed to verify checkpoints")
    if len(record) < len(MAGIC) + TAG_BYTES + 4 or not record.startswith(MAGIC):
        raise CheckpointRejected("unsigned", "not a sealed checkpoint")
    tag = record[len(MAGIC) : len(MAGIC) + TAG_BYTES]
    body = record[len(MAGIC) + TAG_BYTES :]
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise CheckpointRejected("bad_signature", "the tag does not match the content")
    size = int.from_bytes(body[:4], "big")
    if size > MAX_HEADER_BYTES or 4 + size > len(body):
        raise CheckpointRejected("malformed", f"header of {size} bytes")
    header = CheckpointHeader.from_json(body[4 : 4 + size])
    if header.version != FORMAT_VERSION:
        raise CheckpointRejected("incompatible", f"format version {header.version}")
    return header, body[4 + size :]


def restore(payload: bytes, max_bytes: int = MAX_STATE_BYTES) -> PartitionState:
    """Decompress and unpickle a verified payload, with listed classes only."""
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(payload, max_bytes + 1)
    except zlib.error as exc:
        raise CheckpointRejected("malformed", f"payload does not decompress: {exc}") from None
    if len(raw) > max_bytes or inflate.unconsumed_tail:
        raise CheckpointRejected("too_large", f"state larger than {max_bytes} bytes")
    try:
        state = _RestrictedUnpickler(raw).load()
    except CheckpointRejected:
        raise
    except Exception as exc:
        raise CheckpointRejected("incompatible", f"state does not load: {exc!r}") from None
    if not isinstance(state, PartitionState) or not isinstance(state.engine, WarmupEngine):
        raise CheckpointRejected("incompatible", f"not a partition state: {type(state)}")
    return state


def key_id(key: bytes) -> str:
    """A short, non-secret name of a key, for logs.

    >>> key_id(b"k3y")
    'e4bbe2aa'
    """
    return hashlib.sha256(b"warmcast-checkpoint-key\x00" + key).hexdigest()[:8]


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, MAGIC + body, hashlib.sha256).digest()


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only what :mod:`engine.restorable` lists, each name exactly."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(io.BytesIO(raw), fix_imports=False)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return resolve(module, name)
        except Unrestorable as exc:
            raise CheckpointRejected("forbidden_class", str(exc)) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointRejected("forbidden_class", "persistent ids are not restorable")


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CheckpointHeader",
    "CheckpointRejected",
    "PartitionState",
    "key_id",
    "pack",
    "restore",
    "seal",
    "unseal",
]
