"""Coverage-guided fuzzing of the decoders with atheris (optional, not part of the suite).

    pip install atheris
    python -m tests.fuzz.atheris_decode -atheris_runs=500000     # or -max_total_time=600

Each input is decoded as a usage message and as a metric message, then bounded against
the wall clock; any exception is a finding (libFuzzer writes the input to crash-*).
The invariants are those of ``tests/fuzz/test_decoders.py``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from schemas.envelope import decode, reject_skewed
from schemas.metric import MetricEvent
from schemas.usage import UsageEvent

NOW = 1_731_628_800.0
REASONS = {"malformed_json", "schema_violation", "oversize", "bad_envelope", "timestamp_skew"}


def one_input(data: bytes) -> None:
    """Decode one input both ways and check what came out."""
    for schema in (UsageEvent, MetricEvent):
        decoded = decode(data, schema, max_bytes=1 << 16, max_events=64)
        reject_skewed(decoded, NOW, 3600.0, 86_400.0)
        for error in decoded.errors:
            assert error.reason in REASONS, error
            error.message.encode()
        for event in decoded.events:
            assert math.isfinite(event.ts)  # type: ignore[attr-defined]
            assert NOW - 86_400.0 <= event.ts <= NOW + 3600.0  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> None:
    import atheris  # only here: the suite imports this module for its doctests

    atheris.instrument_all()
    atheris.Setup(list(argv if argv is not None else sys.argv), one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
