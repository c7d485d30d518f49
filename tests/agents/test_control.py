"""Control records as the control feed reads them: forged, unsigned, misplaced and
oversize ones are refused with a reason; a command signed with the key is taken."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from agents.control import command_of
from schemas.control import ControlCommand
from schemas.envelope import EventError
from streams.control_auth import CONTROL_PARTITION, SIGNATURE_HEADER, sign, signed
from streams.control_feed import parse

KEY = b"k" * 32


def command() -> ControlCommand:
    made = command_of(b"{}", "resume", "test")
    assert isinstance(made, ControlCommand)
    return made


def record(
    value: bytes, headers: list[tuple[str, bytes]], partition: int = CONTROL_PARTITION
) -> ConsumerRecord:
    return ConsumerRecord(
        "warmcast.control.v1",
        partition,
        3,
        0,
        0,
        b"control",
        value,
        None,
        0,
        len(value),
        tuple(headers),
    )


def reason(got: ControlCommand | EventError) -> str:
    assert isinstance(got, EventError), got
    return got.reason


def test_a_command_signed_with_the_key_is_taken() -> None:
    value, headers = signed(command(), KEY)
    got = parse(record(value, headers), 65536, KEY)
    assert isinstance(got, ControlCommand)
    assert got.command == "resume"


def test_an_unsigned_command_is_refused() -> None:
    value, _ = signed(command(), KEY)
    assert reason(parse(record(value, []), 65536, KEY)) == "unsigned"


def test_a_command_signed_with_another_key_is_refused() -> None:
    value, headers = signed(command(), b"x" * 32)
    assert reason(parse(record(value, headers), 65536, KEY)) == "bad_signature"


def test_a_forged_body_under_a_real_signature_is_refused() -> None:
    value, headers = signed(command(), KEY)
    forged = value.replace(b"resume", b"emergency_stop")
    assert forged != value
    assert reason(parse(record(forged, headers), 65536, KEY)) == "bad_signature"


def test_a_command_on_another_partition_is_refused() -> None:
    value, headers = signed(command(), KEY)
    got = parse(record(value, headers, CONTROL_PARTITION + 1), 65536, KEY)
    assert reason(got) == "wrong_partition"


def test_an_oversize_command_is_refused_before_its_signature_is_checked() -> None:
    value, headers = signed(command(), KEY)
    assert reason(parse(record(value, headers), len(value) - 1, KEY)) == "oversize"


def test_a_signed_body_that_is_not_a_command_is_refused_as_malformed() -> None:
    raw = b"{not json"
    got = parse(record(raw, [(SIGNATURE_HEADER, sign(raw, KEY))]), 65536, KEY)
    assert reason(got) == "malformed_json"


def test_a_request_may_not_set_what_the_worker_sets() -> None:
    assert command_of(b'{"ts": 1}', "resume", "me") == (
        "ts: set by the worker, not by the request",
        422,
    )
    assert command_of(b"[1]", "resume", "me") == ("the body is a JSON object", 400)
