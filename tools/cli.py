"""``warmcast``: the command line.

warmcast run        broker (embedded unless KAFKA_BOOTSTRAP_SERVERS) + worker
warmcast worker     the Faust worker alone (needs a broker)
warmcast broker     a local broker alone: the embedded one (Tansu) or Apache Kafka
warmcast schemas    export or check the JSON Schema files of the contracts
warmcast backtest   run policies offline over a historical trace
warmcast synth      write a seeded synthetic trace with known structure
warmcast control    send a signed operator command to every worker
warmcast executor   carry out the warmup leases on a model server
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

import warmcast
from streams.broker import BROKER_KINDS
from streams.settings import (
    SECRETS,
    SettingsError,
    WarmcastSettings,
    check_policies,
    describe_invalid,
    load_settings,
)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; its help names the environment variable it overrides.
    Secrets have no flag (a command line shows in ``ps``): only their ``--...-file``."""
    defaults = WarmcastSettings.model_construct()
    secrets = ", ".join(defaults.env_name(name) for name in SECRETS)
    group = parser.add_argument_group(
        "settings (flags override the environment)",
        f"Secrets are never flags: each comes from its environment variable ({secrets}) "
        "or from a file named by <variable>_FILE or by its --...-file PATH flag.",
    )
    for name, field in WarmcastSettings.model_fields.items():
        if name in SECRETS:
            group.add_argument(
                "--" + name.replace("_", "-"),
                nargs="?",
                action=_SecretFlag,
                help=argparse.SUPPRESS,
                env=defaults.env_name(name),
            )
            continue
        flag = "--" + name.replace("_", "-")
        env = defaults.env_name(name)
        default = field.default
        shown = "unset" if default is None else default
        text = f"{field.description or name.replace('_', ' ')} [env: {env}; default: {shown}]"
        metavar = "PATH" if name.removesuffix("_file") in SECRETS else "VALUE"
        group.add_argument(flag, dest=f"setting_{name}", default=None, metavar=metavar, help=text)


class _SecretFlag(argparse.Action):
    """A secret given as a flag: refused, without repeating it."""

    def __init__(self, *args: Any, env: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env = env

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        flag = self.option_strings[0]
        parser.error(
            f"{flag} is not accepted: a secret on the command line shows in ps; set "
            f"{self.env} or use {flag}-file PATH"
        )


def _apply_settings_flags(args: argparse.Namespace) -> None:
    """Flags win over the environment: export them before the app reads its settings."""
    defaults = WarmcastSettings.model_construct()
    for name in WarmcastSettings.model_fields:
        value = getattr(args, f"setting_{name}", None)
        if value is not None:
            os.environ[defaults.env_name(name)] = str(value)


def cmd_broker(args: argparse.Namespace) -> int:
    from streams.broker import BrokerError, describe_broker, start_broker

    try:
        broker = start_broker(args.kind, port=args.port, nodes=args.nodes)
    except BrokerError as exc:
        print(f"warmcast broker: {exc}", file=sys.stderr)
        return 2
    print(broker.bootstrap, flush=True)
    print(f"{describe_broker(args.kind, broker)}; Ctrl-C stops it", file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.is_set():
            if not broker.running():
                print("warmcast broker: the broker exited", file=sys.stderr)
                return 1
            stop.wait(0.5)
    finally:
        broker.stop()
    return 0


def _run_worker(settings: WarmcastSettings) -> int:
    from streams.broker import port_in_use

    if settings.web_port and port_in_use(settings.web_host, settings.web_port):
        print(
            f"warmcast: web port {settings.web_port} on {settings.web_host} is already in use "
            "(another worker?); choose one with --web-port",
            file=sys.stderr,
        )
        return 2
    from agents import build_app
    from streams.loop import use_event_loop

    use_event_loop(settings.event_loop)
    app = build_app(settings)
    worker = app.Worker(loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _checked_settings(command: str) -> WarmcastSettings | None:
    """The settings, checked before anything starts (``None``, and why on stderr, when a
    worker could not run with them)."""
    try:
        settings = load_settings()
        check_policies(settings)
    except SettingsError as exc:
        print(f"warmcast {command}: {exc}", file=sys.stderr)
        return None
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    _apply_settings_flags(args)
    settings = _checked_settings("worker")
    return 2 if settings is None else _run_worker(settings)


def cmd_run(args: argparse.Namespace) -> int:
    _apply_settings_flags(args)
    settings = _checked_settings("run")
    if settings is None:
        return 2
    broker = None
    if not settings.kafka_bootstrap_servers:
        from streams.broker import BrokerError, describe_broker, start_broker

        try:
            broker = start_broker(args.broker, port=args.broker_port)
        except BrokerError as exc:
            print(f"warmcast run: {exc}", file=sys.stderr)
            return 2
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        print(describe_broker(args.broker, broker), file=sys.stderr, flush=True)
    print(
        f"worker web server on http://{settings.web_host}:{settings.web_port} "
        "(/health, /metrics); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        return _run_worker(load_settings())
    finally:
        if broker is not None:
            broker.stop()


def cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.export import drifted, export

    if args.action == "export":
        for path in export():
            print(path)
        return 0
    stale = drifted()
    if stale:
        print("out of date: " + ", ".join(stale) + " (run: warmcast schemas export)")
        return 1
    print("schema files match the contracts")
    return 0


def _broker_kind_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=BROKER_KINDS,
        default="tansu",
        help="local broker started when KAFKA_BOOTSTRAP_SERVERS is unset: tansu (embedded, "
        "default) or kafka (Apache Kafka from Maven artifacts, one node)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warmcast",
        description="Keeps AI models warm before they are needed (usage events in, "
        "warmup leases and alerts out, on Kafka).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"warmcast {warmcast.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="start the embedded broker (unless configured) and a worker")
    p.add_argument("--broker-port", type=int, default=None, help="embedded broker port")
    _broker_kind_flag(p)
    _settings_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="start a worker on the configured broker")
    _settings_flags(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "broker",
        help="start a local broker: the embedded one (Tansu) or Apache Kafka",
        description="Start a local broker and print its bootstrap address; Ctrl-C stops it. "
        "tansu: the embedded broker (memory storage). kafka: Apache Kafka in KRaft mode "
        "from Maven artifacts (resolved by mvn into ~/.cache/warmcast/kafka on first use; "
        "needs Java 17), storage in a temporary folder; --nodes 3 replicates every topic "
        "three times with min.insync.replicas=2.",
    )
    p.add_argument(
        "--kind", choices=BROKER_KINDS, default="tansu", help="which broker (default: tansu)"
    )
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="kafka: nodes (1)")
    p.add_argument(
        "--port", type=int, default=None, help="port (kafka: the first node's; default: free)"
    )
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("schemas", help="JSON Schema files of the contracts")
    p.add_argument("action", choices=["export", "check"])
    p.set_defaults(func=cmd_schemas)

    from tools import backtest_cli, bench

    backtest_cli.register(sub)
    bench.register(sub)
    from tools import demo, fleetsim, replay, tail

    replay.register(sub)
    tail.register(sub)
    fleetsim.register(sub)
    demo.register(sub)
    from tools import topics

    topics.register(sub)
    from tools import control

    control.register(sub)
    from tools import executor, hostile, soak

    executor.register(sub)
    from tools import executor_bench

    executor_bench.register(sub)

    soak.register(sub)
    hostile.register(sub)
    from tools import synth

    synth.register(sub)
    from tools import architecture

    architecture.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> Any:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValidationError as exc:  # settings read by a command on its own
        if exc.title == WarmcastSettings.__name__:
            print(f"warmcast {args.command}: {describe_invalid(exc)}", file=sys.stderr)
        else:  # never repeating the input
            print(f"warmcast {args.command}: the settings are not valid: {exc}", file=sys.stderr)
    except SettingsError as exc:
        print(f"warmcast {args.command}: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
