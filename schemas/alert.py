"""Alerts: firing and resolved conditions, on ``warmcast.alerts.v1`` (key: fingerprint)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas._types import TEXT_MAX_LENGTH, EpochSeconds, Identifier, Label

Severity = Literal["info", "warning", "critical"]
AlertState = Literal["firing", "resolved"]


class Alert(BaseModel):
    """A condition with a stable ``fingerprint``: the same condition on the same subject
    always has the same fingerprint, so ``firing`` and the later ``resolved`` pair up."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    fingerprint: Identifier
    kind: Identifier = Field(description="stale_data, dead_letter_burst, drift, ...")
    severity: Severity = "warning"
    state: AlertState
    subject: Label = Field(default="", description="what it is about: a model id, a topic")
    summary: Label = ""
    value: float | None = Field(default=None, allow_inf_nan=False)
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    ts: EpochSeconds
    details: dict[str, Annotated[float, Field(allow_inf_nan=False)] | str | None] | None = Field(
        default=None,
        description="figures that justify it (policy_promoted, policy_rolled_back: both "
        "policies' scores, the test statistic, the window)",
    )
    maintenance: bool = Field(
        default=False,
        description="raised during a maintenance window that covers it: not to page on",
    )
    maintenance_window: Identifier | None = Field(
        default=None, description="the id of that maintenance window"
    )


def label(text: str) -> str:
    """A text within the contract's bound on labels (an alert's subject and summary): a
    longer one is cut, ending in "...".

    >>> label("short"), len(label("x" * 1000)), label("x" * 1000)[-4:]
    ('short', 256, 'x...')
    """
    if len(text) <= TEXT_MAX_LENGTH:
        return text
    return text[: TEXT_MAX_LENGTH - 3] + "..."
