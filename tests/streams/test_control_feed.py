"""The control topic's follower handed records as its consumer hands them, without a
broker (its producer records what it publishes): the history leaves the worker stopped,
safe, both or neither, with its maintenance windows in force, in offset order and never
carrying a refused record out; a new command is carried out once and answers whoever
waits for it; a refused one is counted, dead-lettered, answered and alerted on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr

from schemas.control import ControlCommand
from streams.app import create_app
from streams.control_auth import CONTROL_PARTITION, REASONS, signed
from streams.control_feed import ControlFeed, maintain
from streams.settings import WarmcastSettings
from tests.agents.recording import RecordingProducer, settled

KEY = "k" * 32
CONTROL = "warmcast.control.v1"


class Feed:
    """A control feed on an app of its own, and what it published."""

    def __init__(self, **settings: Any) -> None:
        app = create_app(
            WarmcastSettings(
                kafka_bootstrap_servers="127.0.0.1:1", control_key=SecretStr(KEY), **settings
            )
        )
        self.producer = RecordingProducer()
        app.sender.producer = lambda: self.producer
        self.app = app
        self.runtime = app.runtime
        self.feed = ControlFeed(app)
        self.executed: list[ControlCommand] = []

    async def execute(self, command: ControlCommand) -> dict[str, Any]:
        self.executed.append(command)
        return {"command": command.command, "id": command.id}

    def acknowledged(self) -> list[tuple[str, str]]:
        """(subject, state) of each control acknowledgement on the alerts topic."""
        topic = self.runtime.settings.topic("alerts")
        alerts = [orjson.loads(r.value or b"") for r in self.producer.on(topic)]
        return [(a["subject"], a["state"]) for a in alerts if a["kind"] == "control"]

    def refused(self, reason: str) -> float:
        return self.feed.refused.labels(reason=reason)._value.get()

    def dead_letters(self) -> int:
        return len(self.producer.on(f"{CONTROL}.dlq"))


def record(
    offset: int,
    of: ControlCommand | None = None,
    *,
    key: str = KEY,
    unsigned: bool = False,
    **fields: Any,
) -> ConsumerRecord:
    """A record of the control partition at ``offset``: command ``of``, or one made of
    ``fields``, signed with ``key`` (or not at all)."""
    made = of or ControlCommand.model_validate(fields)
    value, headers = signed(made, key.encode())
    return ConsumerRecord(
        CONTROL,
        CONTROL_PARTITION,
        offset,
        0,
        0,
        b"control",
        value,
        None,
        0,
        len(value),
        () if unsigned else tuple(headers),
    )


def fold(f: Feed, records: list[ConsumerRecord]) -> None:
    async def go() -> None:
        await f.feed._fold(records)
        await settled(f.app)

    asyncio.run(go())


def test_a_history_of_a_stop_and_a_reset_to_safe_leaves_the_worker_stopped_and_safe() -> None:
    f = Feed()
    fold(f, [record(0, command="emergency_stop"), record(1, command="reset_to_safe")])
    assert (f.runtime.paused, f.runtime.safe_mode) == (True, True)
    app_id = f.runtime.settings.app_id
    assert f.acknowledged() == [
        (f"{app_id}/emergency_stop", "firing"),
        (f"{app_id}/safe_mode", "firing"),
    ]


def test_a_resume_after_them_leaves_neither_and_nothing_is_acknowledged() -> None:
    f = Feed()
    history = [record(0, command="emergency_stop"), record(1, command="reset_to_safe")]
    fold(f, [*history, record(2, command="resume")])
    assert (f.runtime.paused, f.runtime.safe_mode) == (False, False)
    assert f.acknowledged() == []


def test_the_history_is_taken_in_offset_order_not_in_the_order_handed_over() -> None:
    stopped_last = Feed()
    fold(stopped_last, [record(9, command="emergency_stop"), record(4, command="resume")])
    assert stopped_last.runtime.paused
    resumed_last = Feed()
    fold(resumed_last, [record(9, command="resume"), record(4, command="emergency_stop")])
    assert not resumed_last.runtime.paused


def test_the_maintenance_windows_the_history_leaves_are_in_force() -> None:
    f = Feed()
    fold(
        f,
        [
            record(0, command="maintenance_add", spec="cron=0 3 * * *,duration=1h,id=a"),
            record(1, command="maintenance_add", spec="cron=0 4 * * *,duration=1h,id=b"),
            record(2, command="maintenance_cancel", window="a"),
        ],
    )
    assert sorted(f.runtime.maintenance.windows) == ["b"]


def test_a_refused_record_in_the_history_is_counted_not_carried_out_nor_dead_lettered() -> None:
    f = Feed()
    fold(
        f,
        [
            record(0, command="emergency_stop", unsigned=True),
            record(1, command="reset_to_safe", key="x" * 32),
        ],
    )
    assert (f.runtime.paused, f.runtime.safe_mode) == (False, False)
    assert (f.refused("unsigned"), f.refused("bad_signature")) == (1, 1)
    assert f.dead_letters() == 0 and f.acknowledged() == []


def test_a_new_command_is_carried_out_once_and_answers_whoever_waits() -> None:
    f = Feed()
    f.feed.execute = f.execute
    command = ControlCommand.model_validate({"command": "resume"})

    async def go() -> tuple[dict[str, Any], bool]:
        waiting = f.feed.expect(command.id)
        await f.feed._live(record(0, command))
        return await waiting, f.feed.known(command.id)

    answer, known = asyncio.run(go())
    assert answer == {"command": "resume", "id": command.id}
    assert [c.id for c in f.executed] == [command.id] and f.feed.applied == 1
    assert f.feed.done[command.id] == answer and known


def test_a_command_id_seen_before_is_refused_dead_lettered_answered_and_alerted() -> None:
    f = Feed()
    f.feed.execute = f.execute
    command = ControlCommand.model_validate({"command": "resume"})

    async def go() -> dict[str, Any]:
        await f.feed._live(record(0, command))
        again = f.feed.expect(command.id)
        await f.feed._live(record(1, command))
        answer = await again
        await settled(f.app)
        return answer

    answer = asyncio.run(go())
    assert answer["refused"] == "replayed" and answer["id"] == command.id
    assert len(f.executed) == 1 and f.refused("replayed") == 1 and f.dead_letters() == 1
    assert f.feed.latest_refusal == "replayed, offset 1 of partition 0"
    [alert] = f.feed.check(time.time())
    assert (alert.kind, alert.state, alert.subject) == ("control_rejected", "firing", CONTROL)


def test_a_command_without_controls_to_carry_it_out_answers_with_an_error() -> None:
    f = Feed()
    command = ControlCommand.model_validate({"command": "resume"})

    async def go() -> dict[str, Any]:
        waiting = f.feed.expect(command.id)
        await f.feed._live(record(0, command))
        return await waiting

    answer = asyncio.run(go())
    assert "no controls are registered" in answer["error"]


def test_an_oversize_record_is_dead_lettered_but_not_counted_as_refused() -> None:
    f = Feed(control_max_bytes=256)
    f.feed.execute = f.execute
    big = record(0, command="maintenance_add", spec="cron=0 3 * * *,duration=1h,id=" + "a" * 300)

    async def go() -> None:
        await f.feed._live(big)
        await settled(f.app)

    asyncio.run(go())
    assert f.executed == [] and f.dead_letters() == 1
    assert sum(f.refused(reason) for reason in REASONS) == 0


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"command": "maintenance_cancel", "window": "none-such"}, 404),
        ({"command": "maintenance_add", "spec": "cron=0 3 * * FUNDAY,duration=1h"}, 422),
    ],
)
def test_a_maintenance_command_that_cannot_be_done_says_why(
    fields: dict[str, Any], status: int
) -> None:
    f = Feed()
    result: dict[str, Any] = {}
    maintain(f.runtime, ControlCommand.model_validate(fields), result)
    assert result["error_status"] == status and result["error"]
    assert f.runtime.maintenance.windows == {}
