"""Operator controls, on ``warmcast.control.v1`` (every worker applies every command).

>>> ControlCommand.model_validate({"command": "emergency_stop", "release": True}).release
True
>>> from pydantic import ValidationError
>>> try:
...     ControlCommand.model_validate({"command": "snapshot"})
... except ValidationError as exc:
...     print(exc.errors()[0]["msg"])
Value error, snapshot needs a name
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas._types import EpochSeconds, Label

Action = Literal[
    "emergency_stop",
    "resume",
    "reset_to_safe",
    "snapshot",
    "restore",
    "skip_batch",
    "promote",
    "rollback",
    "maintenance_add",
    "maintenance_cancel",
]
#: A snapshot's name: letters, digits, dot, dash, underscore.
SnapshotName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class ControlCommand(BaseModel):
    """One operator command.

    - ``emergency_stop``: issue no more warm commands (``release``: also release every
      model kept warm now);
    - ``resume``: leave the emergency stop and the safe mode;
    - ``reset_to_safe``: every engine runs the safe fixed keep-alive until resumed;
    - ``snapshot``: checkpoint every partition's learned state under ``name``;
    - ``restore``: take the learned state of snapshot ``name`` back;
    - ``skip_batch``: go on after the record batch of ``topic`` / ``partition`` that
      starts at ``offset`` and cannot be decoded (it is dead-lettered);
    - ``promote``: make shadow candidate ``policy`` the active policy (the active one runs
      on as a candidate, with its learners);
    - ``rollback``: make the policy active before the latest promotion (or the rollback
      policy) active again.
    - ``maintenance_add``: add the maintenance window ``spec`` (as ``WARMCAST_MAINTENANCE``
      writes one; its id is the spec's ``id=``, else derived from the spec);
    - ``maintenance_cancel``: remove the maintenance window of id ``window``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Action
    id: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default_factory=lambda: uuid.uuid4().hex, description="acknowledgements carry it"
    )
    release: bool = False
    name: SnapshotName | None = None
    issued_by: Label = ""
    topic: Label | None = None
    partition: Annotated[int, Field(ge=0)] | None = None
    offset: Annotated[int, Field(ge=0)] | None = None
    policy: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None,
        description="promote: the shadow candidate, as WARMCAST_SHADOW_POLICIES names it",
    )
    spec: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    window: SnapshotName | None = None
    ts: EpochSeconds = Field(default_factory=time.time)

    @model_validator(mode="after")
    def _named_when_needed(self) -> Self:
        if self.command in ("snapshot", "restore") and self.name is None:
            raise ValueError(f"{self.command} needs a name")
        if self.command == "skip_batch" and None in (self.topic, self.partition, self.offset):
            raise ValueError("skip_batch needs a topic, a partition and an offset")
        if self.command == "promote" and self.policy is None:
            raise ValueError("promote needs a policy (one of the shadow candidates)")
        if self.command == "maintenance_add" and self.spec is None:
            raise ValueError("maintenance_add needs a spec")
        if self.command == "maintenance_cancel" and self.window is None:
            raise ValueError("maintenance_cancel needs the window's id")
        return self
