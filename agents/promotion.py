"""Promotion and rollback of the active policy (engine/promotion.py judges them).

A timer asks the runtime, every ``WARMCAST_ALERT_CHECK_SECONDS``, whether the active policy
is to be rolled back or a shadow candidate promoted; the controls ``promote`` and
``rollback`` do the same on an operator's signed command. Each change is published on the
alerts topic (kind ``policy_promoted`` or ``policy_rolled_back``, the figures that justify
it in ``details``): the audit record of the change.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agents.control import Controls
from engine.promotion import POLICY_CHANGE_KINDS, Decision
from schemas.control import ControlCommand
from streams.app import WarmcastApp

log = logging.getLogger(__name__)


def register(app: WarmcastApp, controls: Controls) -> None:
    """The judging timer and the ``promote`` / ``rollback`` controls, on ``app``."""
    runtime = app.runtime
    for kind in POLICY_CHANGE_KINDS.values():  # counted from zero, in warmcast_alerts_total
        runtime.metrics.alerts.labels(kind=kind, state="resolved")

    async def announce(decision: Decision) -> None:
        log.warning(
            "policy %s: %s made active in place of %s (%s)",
            decision.action,
            decision.policy,
            decision.replaced,
            decision.reason,
        )
        alert = runtime.policy_alert(decision, time.time())
        runtime.alerts.recent.append(alert)  # among /health's recent alerts, never firing
        await app.publish.alert(alert)

    async def change(command: ControlCommand, result: dict[str, Any], by: str) -> None:
        try:
            if command.command == "promote":
                assert command.policy is not None
                decision = runtime.promote(command.policy.strip().lower(), command.issued_by)
            else:
                decision = runtime.rollback(command.issued_by)
        except ValueError as exc:
            result.update(error=f"{exc}{by}", error_status=409)
            return
        result.update(policy=decision.policy, replaced=decision.replaced)
        result.update(version=runtime.lineup.version)
        await announce(decision)

    controls.handles("promote", change)
    controls.handles("rollback", change)

    @app.timer(interval=runtime.settings.alert_check_seconds)
    async def judge_policies() -> None:
        if not runtime.started:
            return
        for decision in runtime.judge_policies():
            await announce(decision)


__all__ = ["register"]
