"""Shadow policies: candidates run on the same usage as the active policy, issuing nothing,
scored online with the backtest's definitions.

:class:`OnlineScore` keeps, as events and commands arrive, the figures that
``tools.scoring.score`` computes offline from a whole run (docs/evaluation.md): a command
issued at minute ``i`` rules the model's lease from minute ``i + 1``; a minute with requests
that finds its model not loaded is one cold start; loaded minutes are the minutes the
leases cover, wasted ones those without a request; ``p75_cold_pct`` is over the models with
a request. Minutes count from the grid's origin, as the engine's own.

:class:`ShadowPolicies` runs one fresh :class:`~engine.core.WarmupEngine` per candidate on
every usage event the partition sees, and scores each; :class:`OnlineScore` also scores the
active policy from the commands it issues.

>>> from engine.policies import FixedKeepAlive
>>> shadows = ShadowPolicies({"fixed:1": FixedKeepAlive(1), "fixed:30": FixedKeepAlive(30)})
>>> for minute in (0, 10, 20, 25):
...     shadows.observe("m", 60.0 * minute + 5)
>>> {name: s["cold_starts"] for name, s in shadows.scores(end_minute=25).items()}
{'fixed:1': 4, 'fixed:30': 1}
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from typing import Any

from engine.core import WarmupEngine
from engine.lease import Command
from engine.policies import Policy
from engine.promotion import Figures
from engine.timebase import MinuteGrid

EPSILON = 1e-6  # minutes: absorbs float error on minute boundaries (as the offline scorer)


def to_minute(ts: float, origin: float) -> int:
    return math.floor((ts - origin) / 60.0 + EPSILON)


_MODEL_SCORE_STATE = ("cold", "folded", "last_minute", "leases", "loaded", "requests", "warm")


class _ModelScore:
    """One model's leases (each ruling from its minute on) and counts."""

    __slots__ = ("cold", "folded", "last_minute", "leases", "loaded", "requests", "warm")

    def __init__(self) -> None:
        #: (from minute, start minute, end minute), in the order issued; end <= start: none
        self.leases: list[tuple[int, int, int]] = []
        self.loaded = 0  # loaded minutes of the leases folded away
        self.folded = 0  # minutes before this are folded into ``loaded``
        self.requests = 0
        self.cold = 0
        self.warm = 0
        self.last_minute = -(1 << 62)

    def __getstate__(self) -> dict[str, object]:
        # by name: the same in the pure-Python and the compiled engine (checkpoints)
        return {name: getattr(self, name) for name in _MODEL_SCORE_STATE}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (None, slots): as written before it said its state
            state = state[1]
        for name, value in state.items():
            setattr(self, name, value)


class OnlineScore:
    """The backtest's figures of one policy, kept as its events and commands arrive."""

    def __init__(self, origin: float = 0.0) -> None:
        self.origin = origin
        self.models: dict[str, _ModelScore] = {}
        #: the figures of the models forgotten (evicted), kept for :meth:`totals`
        self.retired = Figures()

    def __getstate__(self) -> dict[str, object]:
        return {"origin": self.origin, "models": self.models, "retired": self.retired}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def _model(self, model_id: str) -> _ModelScore:
        found = self.models.get(model_id)
        if found is None:
            found = self.models[model_id] = _ModelScore()
        return found

    def command(self, c: Command) -> None:
        """A command the policy issued (in the order issued)."""
        m = self._model(c.model_id)
        ruling_from = to_minute(c.issued_at, self.origin) + 1
        if c.action == "warm":
            lease = (ruling_from, to_minute(c.start, self.origin), to_minute(c.end, self.origin))
        else:
            lease = (ruling_from, 0, 0)
        leases = m.leases
        if leases and leases[-1][0] >= ruling_from:  # the latest command of a minute wins
            while leases and leases[-1][0] >= ruling_from:
                leases.pop()
        leases.append(lease)

    def request(self, model_id: str, ts: float, count: int = 1) -> None:
        """Requests of a model at event time ``ts`` (before the commands they cause)."""
        minute = to_minute(ts, self.origin)
        m = self._model(model_id)
        m.requests += count
        if minute == m.last_minute:
            return
        if minute < m.last_minute:
            return  # a late event of a minute already judged: counted, not judged again
        m.last_minute = minute
        if self._loaded_at(m, minute):
            m.warm += 1
        else:
            m.cold += 1
        self._fold(m, minute - 1)

    def _loaded_at(self, m: _ModelScore, minute: int) -> bool:
        leases = m.leases
        i = bisect_right(leases, (minute, math.inf, math.inf)) - 1
        if i < 0:
            return False
        _, start, end = leases[i]
        return start <= minute < end

    def _fold(self, m: _ModelScore, upto: int) -> None:
        """Count the loaded minutes before ``upto`` of every lease no longer ruling then."""
        leases = m.leases
        while len(leases) > 1 and leases[1][0] <= upto:
            self._count(m, leases[0], leases[1][0])
            leases.pop(0)

    def _count(self, m: _ModelScore, lease: tuple[int, int, int], until: int) -> None:
        ruling_from, start, end = lease
        a, b = max(start, ruling_from, m.folded), min(end, until)
        if b > a:
            m.loaded += b - a
        m.folded = max(m.folded, until)

    def _loaded_minutes(self, m: _ModelScore, end_minute: int) -> int:
        total = m.loaded
        folded = m.folded
        leases = m.leases
        for i, (ruling_from, start, end) in enumerate(leases):
            until = leases[i + 1][0] if i + 1 < len(leases) else end_minute + 1
            a, b = max(start, ruling_from, folded), min(end, until, end_minute + 1)
            if b > a:
                total += b - a
        return total

    def score(self, end_minute: int) -> dict[str, Any]:
        """The figures up to and including ``end_minute`` (``tools.scoring.Score``'s)."""
        cold = requests = warm = loaded = 0
        percents: list[float] = []
        for m in self.models.values():
            cold += m.cold
            requests += m.requests
            warm += m.warm
            loaded += self._loaded_minutes(m, end_minute)
            if m.requests:
                percents.append(100.0 * m.cold / m.requests)
        requested = cold + warm
        percents.sort()
        p75 = percents[int(0.75 * len(percents))] if percents else 0.0
        return {
            "cold_starts": cold,
            "requests": requests,
            "requested_minutes": requested,
            "warm_minutes": warm,
            "loaded_minutes": loaded,
            "wasted_minutes": loaded - warm,
            "models": len(percents),
            "p75_cold_pct": p75,
            "cold_pct_overall": 100.0 * cold / requests if requests else 0.0,
            "precision": warm / loaded if loaded else 0.0,
            "recall": warm / requested if requested else 0.0,
        }

    def totals(self, end_minute: int) -> Figures:
        """The running figures up to and including ``end_minute``, the models forgotten
        included (they only grow, so that buckets are differences of them)."""
        cold = requests = requested = wasted = 0
        for m in self.models.values():
            cold += m.cold
            requests += m.requests
            requested += m.cold + m.warm
            wasted += self._loaded_minutes(m, end_minute) - m.warm
        return self.retired + Figures(cold, requests, requested, wasted)

    def forget(self, model_id: str) -> None:
        m = self.models.pop(model_id, None)
        if m is not None:
            ends = [end for _, _, end in m.leases]
            loaded = self._loaded_minutes(m, max([m.folded, *ends]))
            self.retired += Figures(m.cold, m.requests, m.cold + m.warm, loaded - m.warm)


def parse_shadows(text: str) -> dict[str, tuple[str, dict[str, float]]]:
    """``WARMCAST_SHADOW_POLICIES``: comma-separated policy specs, each with knobs after
    colons; label -> (policy spec, knobs).

    >>> shadows = parse_shadows("hybrid, warmcast:knob=2, fixed:1")
    >>> shadows["warmcast:knob=2"], shadows["fixed:1"], list(shadows)[0]
    (('warmcast', {'knob': 2.0}), ('fixed:1', {}), 'hybrid')
    >>> parse_shadows("")
    {}
    """
    out: dict[str, tuple[str, dict[str, float]]] = {}
    for item in text.split(","):
        label = item.strip().lower()
        if not label:
            continue
        parts = label.split(":")
        spec, rest = parts[0], parts[1:]
        if spec == "fixed" and rest:
            spec, rest = f"fixed:{rest[0]}", rest[1:]
        knobs: dict[str, float] = {}
        for knob in rest:
            key, sep, value = knob.partition("=")
            if not sep or not key:
                raise ValueError(f"bad shadow policy {label!r}: knobs are KEY=NUMBER")
            try:
                knobs[key] = float(value)
            except ValueError:
                raise ValueError(f"bad shadow policy {label!r}: {value!r} is no number") from None
        out[label] = (spec, knobs)
    return out


class ShadowPolicies:
    """Candidate policies, each in an engine of its own, fed every usage event and scored;
    their commands go nowhere."""

    def __init__(
        self,
        policies: Mapping[str, Policy] | None = None,
        grid: MinuteGrid | None = None,
        **engine: Any,
    ) -> None:
        grid = grid or MinuteGrid()
        policies = policies or {}
        self.engines = {
            name: WarmupEngine(policy, grid=grid, **engine) for name, policy in policies.items()
        }
        self.scored = {name: OnlineScore(grid.origin) for name in policies}

    def __getstate__(self) -> dict[str, object]:
        # by name: the same in the pure-Python and the compiled engine (checkpoints)
        return {"engines": self.engines, "scored": self.scored}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def observe(self, model_id: str, ts: float, count: int = 1) -> None:
        """A usage event: scored against each candidate's leases, then decided on."""
        for name, engine in self.engines.items():
            score = self.scored[name]
            caused = engine.observe(model_id, ts, count)
            # commands issued at this minute rule from the next: the request is judged on
            # what ruled before, while those closing earlier minutes already rule
            for c in caused:
                score.command(c)
            score.request(model_id, ts, count)

    def advance(self, ts: float) -> None:
        """Close every candidate's minutes before event time ``ts`` (a quiet partition,
        or the end of a backtest)."""
        for name, engine in self.engines.items():
            for c in engine.advance(ts):
                self.scored[name].command(c)

    def finish(self, ts: float) -> None:
        """The end of a run: :meth:`advance` to ``ts``."""
        self.advance(ts)

    def confirm(self) -> None:
        """Take the events the candidates hold for confirmation, as the engine does."""
        for name, engine in self.engines.items():
            if engine.held_time is not None:
                for c in engine.confirm():
                    self.scored[name].command(c)

    def scores(self, end_minute: int) -> dict[str, dict[str, Any]]:
        return {name: s.score(end_minute) for name, s in self.scored.items()}


def merged_score(scores: Iterable[OnlineScore], end_minute: int) -> dict[str, Any]:
    """One policy's figures over several partitions' scores (disjoint models)."""
    whole = OnlineScore()
    for s in scores:
        whole.models.update(s.models)
    return whole.score(end_minute)
