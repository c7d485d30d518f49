"""``warmcast tail warmup|alerts|health``: what a downstream consumer sees.

On a terminal each message is a row of aligned columns; piped, each message is one JSON
line (the message value as published). ``--from-beginning`` reads the topic from its
start (default: only new messages), ``--limit N`` stops after N messages, ``--timeout S``
stops once no message has arrived for S seconds. Control, bidirectional-override and other
invisible characters in what a message holds are printed as escapes (``\\x1b``,
``\\u202e``; in JSON lines as JSON escapes), so a hostile model id cannot drive the
terminal or split a line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from streams.settings import WarmcastSettings
from tools.replay import add_kafka_flags, iso, positive_float, positive_int, settings_for


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    width: int
    render: Callable[[dict[str, Any]], str]
    right: bool = False


def printable(text: str) -> str:
    r"""``text`` with every character a terminal would act on or hide escaped: controls
    (ESC, newline, DEL, C1), bidirectional overrides and isolates, line separators and
    other invisible ones (what Python's ``str.isprintable`` refuses); a backslash is
    doubled, so that the escaped text reads one way only.

    >>> printable("llama-8b"), printable("évian")
    ('llama-8b', 'évian')
    >>> print(printable("m\x1b[2J\nfake\u202egnp.exe\\x"))
    m\x1b[2J\nfake\u202egnp.exe\\x
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch != "\\" else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _json_printable(line: str) -> str:
    """A JSON line with the characters :func:`printable` escapes written as JSON escapes
    (only strings can hold them, so the line decodes to the same value)."""
    if line.isprintable():
        return line
    return "".join(ch if ch.isprintable() else _json_escape(ch) for ch in line)


def _time(key: str) -> Callable[[dict[str, Any]], str]:
    def render(doc: dict[str, Any]) -> str:
        value = doc.get(key)
        return iso(float(value)) if isinstance(value, int | float) else str(value or "")

    return render


def _text(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda doc: "" if doc.get(key) is None else str(doc[key])


def _number(key: str, fmt: str) -> Callable[[dict[str, Any]], str]:
    def render(doc: dict[str, Any]) -> str:
        value = doc.get(key)
        return format(value, fmt) if isinstance(value, int | float) else ""

    return render


def _lease_minutes(doc: dict[str, Any]) -> str:
    start, end = doc.get("start"), doc.get("end")
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        return ""
    return f"{(end - start) / 60:g}"


COLUMNS: dict[str, list[Column]] = {
    "warmup": [
        Column("issued_at", 20, _time("issued_at")),
        Column("model_id", 24, _text("model_id")),
        Column("action", 7, _text("action")),
        Column("start", 20, _time("start")),
        Column("end", 20, _time("end")),
        Column("min", 5, _lease_minutes, right=True),
        Column("prio", 4, _text("priority"), right=True),
        Column("policy", 12, _text("policy_version")),
        Column("reason", 40, _text("reason")),
    ],
    "alerts": [
        Column("ts", 20, _time("ts")),
        Column("state", 8, _text("state")),
        Column("severity", 8, _text("severity")),
        Column("kind", 18, _text("kind")),
        Column("subject", 28, _text("subject")),
        Column("summary", 60, _text("summary")),
    ],
    "health": [
        Column("ts", 20, _time("ts")),
        Column("model_id", 24, _text("model_id")),
        Column("requests", 9, _text("requests_total"), right=True),
        Column("cold", 7, _text("cold_starts_total"), right=True),
        Column("req/s", 9, _number("request_rate", ".3f"), right=True),
        Column("cold %", 7, lambda d: _number("cold_start_rate", ".1%")(d).rstrip("%"), True),
        Column("latency s", 9, _number("latency_mean", ".3f"), right=True),
        Column("loaded until", 20, _time("loaded_until")),
    ],
}


def _cell(text: str, column: Column) -> str:
    text = printable(text)
    if len(text) > column.width:
        text = text[: column.width - 1] + "…"
    return text.rjust(column.width) if column.right else text.ljust(column.width)


def header(kind: str) -> str:
    """The column titles of a topic's table.

    >>> header("alerts").split()
    ['ts', 'state', 'severity', 'kind', 'subject', 'summary']
    """
    return "  ".join(_cell(c.title, c) for c in COLUMNS[kind]).rstrip()


def row(kind: str, value: bytes) -> str:
    """One message as a row of aligned columns.

    >>> row("warmup", b'{"issued_at": 0, "model_id": "m", "action": "warm", "start": 60, '
    ...     b'"end": 660, "priority": 2, "policy_version": "fixed-10/1", "reason": "x"}').split()
    ['1970-01-01T00:00:00Z', 'm', 'warm', '1970-01-01T00:01:00Z', '1970-01-01T00:11:00Z', \
'10', '2', 'fixed-10/1', 'x']
    """
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return f"<not JSON: {value[:80]!r}>"
    if not isinstance(doc, dict):
        return f"<not an object: {value[:80]!r}>"
    return "  ".join(_cell(c.render(doc), c) for c in COLUMNS[kind]).rstrip()


def json_line(value: bytes) -> str:
    r"""The message value as one JSON line (re-encoded if it spans lines), with every
    character :func:`printable` escapes written as a JSON escape.

    >>> json_line(b'{"a": 1,\n "b": 2}')
    '{"a":1,"b":2}'
    >>> print(json_line('{"model_id": "m\\u001b[2J\u202e\u0085"}'.encode()))
    {"model_id":"m\u001b[2J\u202e\u0085"}
    """
    try:
        line = orjson.dumps(orjson.loads(value)).decode()
    except orjson.JSONDecodeError:
        line = orjson.dumps({"undecodable": value.decode("utf-8", "replace")}).decode()
    return _json_printable(line)


async def tail(
    settings: WarmcastSettings,
    kind: str,
    *,
    out: TextIO,
    pretty: bool,
    from_beginning: bool = False,
    limit: int | None = None,
    timeout: float | None = None,
) -> int:
    """Print messages of ``kind``'s topic until ``limit`` or ``timeout``; how many."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.kafka import client_kwargs

    topic = settings.topic(kind)
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        fetch_max_wait_ms=200,
    )
    await consumer.start()
    shown = 0
    try:
        partitions = await _partitions(consumer, topic, timeout)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        if pretty:
            print(header(kind), file=out, flush=True)
        last = time.monotonic()
        while limit is None or shown < limit:
            batch = await consumer.getmany(timeout_ms=200)
            records = sorted(
                (r for rs in batch.values() for r in rs), key=lambda r: (r.timestamp, r.offset)
            )
            for record in records:
                if limit is not None and shown >= limit:
                    break
                value = record.value or b""
                print(row(kind, value) if pretty else json_line(value), file=out, flush=True)
                shown += 1
            if records:
                last = time.monotonic()
            elif timeout is not None and time.monotonic() - last >= timeout:
                break
    finally:
        await consumer.stop()
    return shown


async def _partitions(consumer: Any, topic: str, timeout: float | None) -> list[int]:
    from streams.kafka import topic_partitions

    try:
        return await topic_partitions(consumer, topic, timeout if timeout is not None else 30.0)
    except LookupError as exc:
        raise LookupError(f"{exc} (is a worker running?)") from None


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``tail`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "tail",
        help="print warmup commands, alerts or health snapshots as they are published",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog="exit status: 0 done (limit, timeout or Ctrl-C), 2 broker error",
    )
    p.add_argument("what", choices=sorted(COLUMNS), help="which topic")
    p.add_argument("--from-beginning", action="store_true", help="read the topic from its start")
    p.add_argument("--limit", type=positive_int, metavar="N", help="stop after N messages")
    p.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="stop once no message arrived for SECONDS (default: wait for ever)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    out.add_argument("--pretty", action="store_true", help="columns even when piped")
    add_kafka_flags(p)
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run the ``tail`` subcommand from parsed arguments; the exit status."""
    from aiokafka.errors import KafkaError

    out = stdout if stdout is not None else sys.stdout
    isatty = getattr(out, "isatty", None)
    pretty = args.pretty or (not args.json and bool(isatty and isatty()))
    settings = settings_for(args.bootstrap, args.namespace)
    if not settings.kafka_bootstrap_servers:
        print(
            "warmcast tail: no broker: set KAFKA_BOOTSTRAP_SERVERS or --bootstrap", file=sys.stderr
        )
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                tail(
                    settings,
                    args.what,
                    out=out,
                    pretty=pretty,
                    from_beginning=args.from_beginning,
                    limit=args.limit,
                    timeout=args.timeout,
                )
            )
    except (OSError, LookupError, KafkaError) as exc:
        print(f"warmcast tail: {printable(str(exc))}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.tail warmup ...``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="warmcast")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["tail", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["COLUMNS", "command", "header", "json_line", "printable", "register", "row", "tail"]
