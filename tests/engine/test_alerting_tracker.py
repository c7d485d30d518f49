"""Alert transitions: for durations, keep-firing, value hysteresis, deduplication."""

from __future__ import annotations

import itertools
import random

from engine.alerting import AlertTracker, AlertTransition, as_transition, fingerprint


def run(tracker: AlertTracker, signal: list[tuple[float, bool]]) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    for ts, active in signal:
        out += [(ts, a.state) for a in tracker.check("k", "s", active, ts=ts)]
    return out


def test_without_durations_every_change_is_a_transition() -> None:
    signal = [(float(t), t % 2 == 0) for t in range(6)]
    assert [s for _, s in run(AlertTracker(), signal)] == ["firing", "resolved"] * 3


def test_a_flapping_signal_fires_once() -> None:
    rng = random.Random(3)
    signal = [(t * 0.5, rng.random() < 0.6) for t in range(40)]  # flaps every step or two
    signal += [(20.0 + t, False) for t in range(20)]
    out = run(AlertTracker(for_seconds=1.0, keep_firing_seconds=5.0), signal)
    assert [s for _, s in out] == ["firing", "resolved"]


def test_short_blips_never_fire() -> None:
    signal = [(t, t % 3 == 0) for t in range(30)]  # active for one step in three
    assert run(AlertTracker(for_seconds=1.5), [(float(t), a) for t, a in signal]) == []


def test_value_hysteresis_keeps_firing_until_clear() -> None:
    t = AlertTracker()
    assert t.check("lat", "w", True, ts=0, value=0.6, threshold=0.5)[0].state == "firing"
    assert t.check("lat", "w", False, ts=1, value=0.48, clear=False) == []
    (resolved,) = t.check("lat", "w", False, ts=2, value=0.4, clear=True)
    assert resolved.state == "resolved" and resolved.fingerprint == fingerprint("lat", "w")


def test_transitions_alternate_per_fingerprint_and_are_remembered() -> None:
    rng = random.Random(9)
    t = AlertTracker(for_seconds=0.5, keep_firing_seconds=0.5, history=1000)
    seen: list[AlertTransition] = []
    for step in range(500):
        subject = rng.choice("abc")
        seen += t.check("k", subject, rng.random() < 0.5, ts=step * 0.25)
    for _, group in itertools.groupby(
        sorted(seen, key=lambda a: (a.subject, a.ts)), key=lambda a: a.subject
    ):
        states = [a.state for a in group]
        assert all(x != y for x, y in itertools.pairwise(states))
        assert states[0] == "firing"
    assert list(t.recent) == seen
    assert set(t.firing_kinds()) <= {"k"}


def test_recorded_repeats_are_dropped() -> None:
    t = AlertTracker()
    alert = as_transition(
        type("A", (), {"kind": "learner_drift", "state": "firing", "model_id": "m"})(), ts=5.0
    )
    assert alert is not None
    assert t.record(alert) == [alert]
    assert t.record(alert) == []
    assert as_transition(object(), ts=1.0) is None


#: Two alerts of a policy pickled by the previous version, when they were
#: ``engine.drift.Alert(kind, model_id, value, threshold, state, minute)``.
LEGACY_ALERTS = bytes.fromhex(
    "80059592000000000000005d94288c0c656e67696e652e6472696674948c05416c6572749493942981945d"
    "94288c0d6c6561726e65725f6472696674948c016d94473fd999999999999a473fc999999999999a8c0666"
    "6972696e67944b64656268032981945d94288c0e71756575655f6f766572666c6f77944e47400800000000"
    "00004740240000000000008c087265736f6c766564944b076562652e"
)


def test_a_checkpoint_of_the_earlier_alert_form_restores_as_transitions() -> None:
    from engine.checkpoint import _RestrictedUnpickler

    drift, overflow = _RestrictedUnpickler(LEGACY_ALERTS).load()
    assert drift == AlertTransition.raised("learner_drift", "m", 0.4, 0.2, "firing", 100)
    assert (overflow.kind, overflow.model_id, overflow.state) == (
        "queue_overflow",
        None,
        "resolved",
    )
    assert overflow.fingerprint == fingerprint("queue_overflow", "*") and overflow.minute == 7


def test_a_policy_alert_is_stamped_when_drained() -> None:
    raised = AlertTransition.raised("learner_drift", "m", 0.4, 0.2, "firing", 100)
    assert raised.ts == 6000.0
    drained = as_transition(raised, ts=1234.5)
    assert drained is not None and drained.ts == 1234.5 and drained.minute == 100
    own = AlertTracker().check("stale_data", "usage", True, ts=10, value=400, threshold=300)[0]
    assert as_transition(own, ts=99.0) is own  # the worker's own checks keep their time
