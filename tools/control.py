"""``warmcast control ACTION``: an operator command for every worker, signed.

The command is signed with the control key (``WARMCAST_CONTROL_KEY``, or the file that
``WARMCAST_CONTROL_KEY_FILE`` or ``--control-key-file`` names; never a flag) and published
on partition 0 of ``<namespace>.control.v1``. Every worker carries it out and acknowledges
it on the alerts topic (kind ``control``). The command is printed as published.

    warmcast control emergency-stop --release
    warmcast control resume
    warmcast control reset-to-safe
    warmcast control snapshot before-upgrade
    warmcast control restore before-upgrade
    warmcast control promote warmcast
    warmcast control rollback
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import sys
from typing import Any

from pydantic import ValidationError

from engine.maintenance import WindowSpecError, parse_window
from schemas.control import ControlCommand
from streams.control_auth import CONTROL_PARTITION, signed
from streams.settings import WarmcastSettings
from tools.replay import add_kafka_flags, settings_for

#: Action on the command line -> command.
ACTIONS = {
    "emergency-stop": "emergency_stop",
    "resume": "resume",
    "reset-to-safe": "reset_to_safe",
    "snapshot": "snapshot",
    "restore": "restore",
    "promote": "promote",
    "rollback": "rollback",
    "maintenance-add": "maintenance_add",
    "maintenance-cancel": "maintenance_cancel",
}
#: The field the positional argument fills, per command (default: ``name``).
ARGUMENT = {"promote": "policy", "maintenance_add": "spec", "maintenance_cancel": "window"}


def caller() -> str:
    """Who sends: ``cli user@host``."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"cli {user}@{socket.gethostname()}"


async def publish(settings: WarmcastSettings, command: ControlCommand, key: bytes) -> int:
    """Publish a signed command; returns its offset."""
    from aiokafka import AIOKafkaProducer

    from streams.kafka import client_kwargs

    value, headers = signed(command, key)
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            settings.topic("control"),
            value,
            key=b"control",
            partition=CONTROL_PARTITION,
            headers=headers,
        )
    finally:
        await producer.stop()
    return int(sent.offset)


def command(args: argparse.Namespace) -> int:
    if args.control_key_file:
        os.environ["WARMCAST_CONTROL_KEY_FILE"] = args.control_key_file
    settings = settings_for(args.bootstrap, args.namespace)
    if settings.control_key is None:
        print(
            "warmcast control: no control key: set WARMCAST_CONTROL_KEY or "
            "WARMCAST_CONTROL_KEY_FILE (or --control-key-file PATH)",
            file=sys.stderr,
        )
        return 2
    if not settings.kafka_bootstrap_servers:
        print("warmcast control: set KAFKA_BOOTSTRAP_SERVERS or --bootstrap", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {"command": ACTIONS[args.action], "issued_by": caller()}
    if args.release:
        doc["release"] = True
    if args.name is not None:
        doc[ARGUMENT.get(doc["command"], "name")] = args.name
    if doc["command"] == "maintenance_add" and args.name is not None:
        try:
            parse_window(args.name)
        except WindowSpecError as exc:
            print(f"warmcast control: spec: {exc}", file=sys.stderr)
            return 2
    if args.id is not None:
        doc["id"] = args.id
    try:
        cmd = ControlCommand.model_validate(doc)
    except ValidationError as exc:
        errors = "; ".join(e["msg"] for e in exc.errors(include_url=False))
        print(f"warmcast control: {errors}", file=sys.stderr)
        return 2
    key = settings.control_key.get_secret_value().encode()
    try:
        offset = asyncio.run(publish(settings, cmd, key))
    except Exception as exc:
        print(f"warmcast control: not published: {exc!r}", file=sys.stderr)
        return 2
    print(cmd.model_dump_json())
    print(
        f"published on {settings.topic('control')} partition {CONTROL_PARTITION} at offset "
        f"{offset}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``control`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "control",
        help="send a signed operator command (emergency stop, resume, ...) to every worker",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog="exit status: 0 published, 2 usage, key or broker error. The control key "
        "comes from the environment or a file, never from a flag.",
    )
    p.add_argument("action", choices=list(ACTIONS))
    p.add_argument(
        "name",
        nargs="?",
        help="snapshot name (snapshot, restore), shadow candidate (promote), window spec "
        "(maintenance-add: as WARMCAST_MAINTENANCE writes one) or window id "
        "(maintenance-cancel)",
    )
    p.add_argument("--release", action="store_true", help="emergency-stop: release every model")
    p.add_argument("--id", help="command id (default: a new one); an id is carried out once")
    p.add_argument(
        "--control-key-file",
        metavar="PATH",
        help="file holding the control key [env: WARMCAST_CONTROL_KEY_FILE]",
    )
    add_kafka_flags(p)
    p.set_defaults(func=command)
    return p
