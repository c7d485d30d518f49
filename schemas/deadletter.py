"""Dead letters: what a worker or an executor refused, on ``<topic>.dlq``.

A dead letter's value is the refused record (or the refused event of an envelope) as it
was read, cut to its head when it is too large to send whole; its key is the record's key.
Its headers say where it was read and why it was refused: :class:`DeadLetterHeaders`, with
the header names as aliases and the values as the UTF-8 text the headers carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas._types import Identifier

#: A whole number >= 0, as text.
Count = Annotated[str, Field(pattern="^(0|[1-9][0-9]*)$")]


class DeadLetterHeaders(BaseModel):
    """The headers of a dead letter, by header name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    original_topic: Identifier = Field(alias="warmcast.original-topic")
    original_partition: Count = Field(alias="warmcast.original-partition")
    original_offset: Count = Field(
        alias="warmcast.original-offset",
        description="offset of the refused record (of the first record of a skipped batch)",
    )
    error_class: Identifier = Field(alias="warmcast.error-class")
    error_reason: Identifier = Field(
        alias="warmcast.error-reason",
        description="malformed_json, schema_violation, oversize, bad_envelope, "
        "timestamp_skew, processing_error, undecodable_batch, ...",
    )
    error_message: str = Field(alias="warmcast.error-message", max_length=2000)
    envelope_index: Count | None = Field(
        default=None,
        alias="warmcast.envelope-index",
        description="the refused event's place in its envelope (absent: the whole record)",
    )
    truncated: Literal["true"] | None = Field(
        default=None, alias="warmcast.truncated", description="the value is the record's head"
    )
    original_size: Count | None = Field(
        default=None, alias="warmcast.original-size", description="bytes of the whole value"
    )
    original_sha256: str | None = Field(
        default=None,
        alias="warmcast.original-sha256",
        pattern="^[0-9a-f]{64}$",
        description="SHA-256 of the whole value, hex",
    )
    original_last_offset: Count | None = Field(
        default=None,
        alias="warmcast.original-last-offset",
        description="a skipped batch (undecodable_batch): the offset of its last record",
    )
    codec: str | None = Field(
        default=None, alias="warmcast.codec", description="a skipped batch: its compression"
    )
    skipped_by: str | None = Field(
        default=None,
        alias="warmcast.skipped-by",
        max_length=256,
        description="a skipped batch: who asked for the skip",
    )

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]]) -> DeadLetterHeaders:
        """The headers of a consumed dead letter, checked (``ValueError`` if they are not
        a dead letter's).

        >>> h = DeadLetterHeaders.from_headers([
        ...     ("warmcast.original-topic", b"t.usage.v1"), ("warmcast.original-partition", b"0"),
        ...     ("warmcast.original-offset", b"7"), ("warmcast.error-class", b"JSONDecodeError"),
        ...     ("warmcast.error-reason", b"malformed_json"), ("warmcast.error-message", b"x"),
        ... ])
        >>> h.original_offset, h.error_reason, h.envelope_index
        ('7', 'malformed_json', None)
        """
        return cls.model_validate({name: value.decode() for name, value in headers})
