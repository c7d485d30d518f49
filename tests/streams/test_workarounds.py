"""Each framework workaround (streams.workarounds) against the installed libraries: the
private parts it uses exist, and it does what it says on real objects (no broker)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from faust.types import TP

from streams import workarounds
from streams.app import create_app
from streams.settings import WarmcastSettings
from streams.workarounds import WORKAROUNDS, Workaround


@pytest.mark.parametrize("workaround", WORKAROUNDS, ids=lambda w: w.name)
def test_every_private_part_a_workaround_needs_exists(workaround: Workaround) -> None:
    assert workarounds.missing(workaround) == []


def test_a_missing_part_is_found() -> None:
    gone = Workaround("x", "aiokafka", "here", "why", ("aiokafka", "AIOKafkaConsumer", ("_no",)))
    assert workarounds.missing(gone) == ["AIOKafkaConsumer._no"]
    absent = Workaround("y", "aiokafka", "here", "why", ("aiokafka", "NoSuchClass", ()))
    assert workarounds.missing(absent) == ["aiokafka.NoSuchClass"]


def test_the_installed_libraries_are_the_tested_ones() -> None:
    assert workarounds.check() == []


def test_a_version_off_the_pin_is_said() -> None:
    assert workarounds.version_problem("faust-streaming", "0.16.0") is not None
    assert workarounds.version_problem("faust-streaming", "0.15.9") is None


def app() -> Any:
    return create_app(WarmcastSettings(kafka_bootstrap_servers="127.0.0.1:1"))


def test_fetch_wait_reaches_the_consumer_and_its_fetcher() -> None:
    async def go() -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
        consumer._fetcher = type("F", (), {"_fetch_max_wait_ms": 1500})()
        workarounds.set_fetch_wait(consumer, 20)
        return consumer

    consumer = asyncio.run(go())
    assert consumer._fetch_max_wait_ms == 20 and consumer._fetcher._fetch_max_wait_ms == 20


def test_no_consumer_thread_before_the_worker_starts() -> None:
    assert workarounds.kafka_consumer(app())[1] is None
    assert workarounds.tune_consumer(app(), 20) is False
    assert workarounds.seek_uncommitted_to_beginning(app()) is False


def test_a_message_let_go_is_no_longer_waited_for() -> None:
    a = app()
    unacked = workarounds.unacked_messages(a.consumer)
    assert unacked is not None and len(unacked) == 0

    class Message:  # Faust's are weakly referenced
        pass

    message = Message()
    unacked.add(message)
    workarounds.forget_unacked(a, message)
    assert message not in unacked


def test_skipped_offsets_count_as_acknowledged() -> None:
    consumer = app().consumer
    tp = TP("warmcast.usage.v1", 0)
    consumer._committed_offset[tp] = 10
    asyncio.run(workarounds.acknowledge_skipped(consumer, tp, 10, 14, threading.Lock()))
    assert 14 in consumer._acked_index[tp] and consumer._acked[tp] == [14]
    assert consumer._gap[tp]  # 10..13 recorded as a gap


def test_the_memory_store_maps_keys_to_partitions() -> None:
    a = app()
    assert isinstance(workarounds.key_partitions(a.model_health.data), dict)
    assert workarounds.key_partitions(object()) is None
