"""``warmcast topics``: create warmcast's topics on the configured cluster, or list them.

Creation is idempotent (existing topics are left as they are), so it serves as the one-shot
job that prepares a cluster before its workers start (see docker-compose.yml).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from streams.settings import WarmcastSettings


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.kafka import ensure_topics, topic_specs

    settings = WarmcastSettings()
    if args.action == "list":
        for spec in topic_specs(settings):
            compacted = " (compacted)" if spec.compacted else ""
            print(f"{spec.name}\t{spec.partitions} partitions{compacted}")
        return 0
    if not settings.kafka_bootstrap_servers:
        print("warmcast topics: set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    try:
        partitions = asyncio.run(ensure_topics(settings, timeout=args.wait))
    except Exception as exc:
        print(f"warmcast topics: {exc}", file=sys.stderr)
        return 1
    for name, count in sorted(partitions.items()):
        print(f"{name}\t{count} partitions")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "topics",
        help="create warmcast's topics on the configured cluster (idempotent), or list them",
        description=__doc__,
    )
    p.add_argument(
        "action",
        choices=["create", "list"],
        help="create: make missing topics and print all; list: the topics settings imply",
    )
    p.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for the cluster (default 60)"
    )
    p.set_defaults(func=cmd_topics)
