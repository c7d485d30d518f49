"""A worker whose ``warmcast`` policy is a stand-in steered by metric events.

Run as ``python -m tests.ops.standin`` (same flags and environment as ``warmcast worker``).
The stand-in keeps a 10-minute keep-alive and has parts as the learning policy does
(``WarmAccuracy``, ``WarmupQueue``, ``ResourceManager``, ``DriftMonitor``), whose
figures are set by metric events named ``standin.<control>`` sent to its partition:

- ``standin.precision`` / ``standin.recall``: the accuracy of its warm decisions;
- ``standin.discrimination``: its learner's ranking (AUC) of minutes that get a request;
- ``standin.queue_overflow``: that many warmups overflow a full queue;
  ``standin.queue_depth``: the queue's depth;
- ``standin.budget_use``: the share of its memory budget in use;
- ``standin.drift``: 1 raises a learner drift alert, 0 resolves it;
- ``standin.decision_delay``: seconds each lease decision takes;
- ``standin.crash``: 1 makes every lease decision raise (the usage agent then crashes at
  each message, as with a broken learner), 0 stops it.

So the health checks of a real worker can be driven through the broker, whatever state
the learning policy itself is in.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.accuracy import Discrimination
from engine.components import PolicyParts
from engine.lease import Lease
from engine.policies import FixedKeepAlive


@dataclass
class AccuracyCounts:
    hits: int = 0
    loaded_minutes: int = 0
    invoked_minutes: int = 0


class WarmAccuracy:
    def __init__(self) -> None:
        self.total = AccuracyCounts()

    def counts(self, now: int) -> AccuracyCounts:
        return self.total


@dataclass
class QueueStats:
    overflow: int = 0


class WarmupQueue:
    def __init__(self, max_size: int = 10) -> None:
        self.max_size = max_size
        self.stats = QueueStats()
        self.waiting = 0

    def __len__(self) -> int:
        return self.waiting


class ResourceManager:
    def __init__(self, max_memory: float = 10.0) -> None:
        self.max_memory = max_memory
        self.used = 0.0

    def in_use(self, minute: int) -> float:
        return self.used


class DriftMonitor:
    """Present: the policy detects drift."""


@dataclass
class DriftAlert:
    kind: str
    model_id: str | None
    value: float
    threshold: float
    state: str


@dataclass
class StandInPolicy:
    knob: float = 1.0
    size_weight: float = 0.0  # the worker passes every warmcast setting it has
    name: str = "warmcast"
    version: str = "warmcast/standin"
    inner: FixedKeepAlive = field(default_factory=lambda: FixedKeepAlive(10))
    accuracy: WarmAccuracy = field(default_factory=WarmAccuracy)
    queue: WarmupQueue = field(default_factory=WarmupQueue)
    resources: ResourceManager = field(default_factory=ResourceManager)
    drift: DriftMonitor = field(default_factory=DriftMonitor)
    prediction: types.SimpleNamespace = field(
        default_factory=lambda: types.SimpleNamespace(discrimination=Discrimination())
    )
    delay: float = 0.0
    crashing: bool = False
    alerts: list[DriftAlert] = field(default_factory=list)

    def parts(self) -> PolicyParts:
        return PolicyParts(
            prediction=self.prediction,
            accuracy=self.accuracy,
            queue=self.queue,
            resources=self.resources,
            drift=self.drift,
        )

    def on_request(self, model_id: str, minute: int) -> Lease | None:
        if self.crashing:
            raise RuntimeError(f"stand-in policy told to crash (asked about {model_id})")
        if self.delay:
            time.sleep(self.delay)  # a slow decision, as a struggling learner would take
        return self.inner.on_request(model_id, minute)

    def on_minute_closed(
        self, minute: int, counts: Mapping[str, int]
    ) -> Iterable[tuple[str, Lease]]:
        return ()

    def next_review(self) -> int | None:
        return None

    def forget(self, model_id: str) -> None:
        return None

    def observe_metric(self, model_id: str, name: str, value: float, ts: float = 0.0) -> None:
        control = name.removeprefix("standin.")
        if control == name:
            return
        acc = self.accuracy.total
        if control == "precision":
            acc.loaded_minutes = 1000
            acc.hits = round(value * 1000)
            acc.invoked_minutes = acc.invoked_minutes or acc.hits
        elif control == "discrimination":
            # 100 minutes that got a request at p = 0.75; of 100 that did not, the share
            # ``value`` scored below them (p = 0.25) and the rest above (p = 0.95).
            ranking = self.prediction.discrimination = Discrimination()
            below = round(value * 100)
            for i in range(100):
                ranking.add(0.75, True)
                ranking.add(0.25 if i < below else 0.95, False)
        elif control == "recall":
            acc.invoked_minutes = max(1, round(acc.hits / value))
        elif control == "queue_overflow":
            self.queue.stats.overflow += int(value)
            self.queue.waiting = self.queue.max_size
        elif control == "queue_depth":
            self.queue.waiting = int(value)
        elif control == "budget_use":
            self.resources.used = value * self.resources.max_memory
        elif control == "drift":
            state = "firing" if value else "resolved"
            self.alerts.append(DriftAlert("learner_drift", None, value, 0.0, state))
        elif control == "decision_delay":
            self.delay = value
        elif control == "crash":
            self.crashing = bool(value)

    def drain_alerts(self) -> list[DriftAlert]:
        out, self.alerts = self.alerts, []
        return out


def install() -> None:
    """Make ``engine.warmcast.WarmcastPolicy`` the stand-in, in this process."""
    module = types.ModuleType("engine.warmcast")
    module.WarmcastPolicy = StandInPolicy  # type: ignore[attr-defined]
    sys.modules["engine.warmcast"] = module


if __name__ == "__main__":
    install()
    from tools.cli import main

    sys.exit(main(["worker", *sys.argv[1:]]))
