"""Policies by name: ``fixed:K``, ``hybrid``, ``warmcast``, and the cache baselines of a
memory budget ``lru``, ``gdsf`` and ``hybrid+lru``.

The one place that turns a policy spec from a command line or a setting into a policy
object, so that the workers, the backtest and the replay tools accept the same names.

>>> make_policy("fixed:20").name
'fixed:20'
>>> make_policy("hybrid").version
'hybrid/1'
>>> make_policy("fixed")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown policy 'fixed': use fixed:K (K minutes), hybrid, warmcast, ...

Under a memory budget each policy is paired with the way it chooses what stays loaded
(:func:`make_budget`): ``warmcast`` by value per byte, keeping what it once loaded while
there is room; ``lru`` and ``gdsf`` are caches (kept until evicted, least recently used
or lowest greedy-dual priority first); ``fixed:K``, ``hybrid`` and ``hybrid+lru`` keep
their own leases and evict the least recently used when the budget binds.

>>> b = make_budget("gdsf", 8 * 2**30)
>>> b.rule, b.keep_idle, make_budget("hybrid+lru", 1.0).rule
('gdsf', True, 'lru')
"""

from __future__ import annotations

from typing import Any

from engine.budget import Budget
from engine.policies import FixedKeepAlive, HybridHistogram, KeepLoaded, Policy

POLICY_NAMES = ("fixed:K", "hybrid", "warmcast", "lru", "gdsf", "hybrid+lru")
#: How each policy chooses under a budget: (eviction rule, keep what is loaded while room)
_BUDGET_RULES = {
    "warmcast": ("value", True),
    "lru": ("lru", True),
    "gdsf": ("gdsf", True),
}


class PolicyUnavailable(RuntimeError):
    """A policy that is named correctly but cannot be built here (its module is missing)."""


def parse_policy(spec: str) -> str:
    """The canonical form of a policy spec; ``ValueError`` for one that names no policy.

    >>> parse_policy(" Hybrid "), parse_policy("fixed:010")
    ('hybrid', 'fixed:10')
    >>> parse_policy("fixed:0")
    Traceback (most recent call last):
    ...
    ValueError: bad policy 'fixed:0': fixed:K needs K, whole minutes, of at least 1
    """
    name = spec.strip().lower()
    if name.startswith("fixed:"):
        minutes = name.partition(":")[2]
        if not (minutes.isascii() and minutes.isdigit()) or int(minutes) < 1:
            raise ValueError(f"bad policy {spec!r}: fixed:K needs K, whole minutes, of at least 1")
        return f"fixed:{int(minutes)}"
    if name in ("hybrid", "warmcast", "lru", "gdsf", "hybrid+lru"):
        return name
    raise ValueError(
        f"unknown policy {spec!r}: use fixed:K (K minutes), hybrid, warmcast, lru, gdsf "
        "or hybrid+lru"
    )


def make_policy(spec: str, **knobs: Any) -> Policy:
    """A fresh policy for ``spec``.

    - ``fixed:K``: :class:`~engine.policies.FixedKeepAlive` with a ``K``-minute keep-alive
      (no knobs);
    - ``hybrid``: :class:`~engine.policies.HybridHistogram`; knobs are its keyword
      arguments (``bins``, ``cv_threshold``, ``oob_threshold``, ``head_q``, ``tail_q``,
      ``margin``);
    - ``warmcast``: ``engine.warmcast.WarmcastPolicy(**knobs)`` (e.g. ``knob=1.0``, the
      trade-off between memory time and cold starts). Raises :class:`PolicyUnavailable`
      when that module cannot be imported.

    Unknown names raise ``ValueError``; knobs a policy does not take raise ``TypeError``.
    """
    name = parse_policy(spec)
    if name.startswith("fixed:"):
        if knobs:
            raise TypeError(f"fixed:K takes no knobs, got {sorted(knobs)}")
        return FixedKeepAlive(int(name.partition(":")[2]))
    if name == "hybrid":
        return HybridHistogram(**knobs)
    if name == "hybrid+lru":
        hybrid = HybridHistogram(**knobs)
        hybrid.name, hybrid.version = name, "hybrid+lru/1"
        return hybrid
    if name in ("lru", "gdsf"):
        if knobs:
            raise TypeError(f"{name} takes no knobs, got {sorted(knobs)}")
        return KeepLoaded(name)
    try:  # warmcast
        from engine.warmcast import WarmcastPolicy
    except ImportError as exc:
        raise PolicyUnavailable(
            "the warmcast policy is not available: engine.warmcast.WarmcastPolicy "
            f"could not be imported ({exc})"
        ) from exc
    policy: Policy = WarmcastPolicy(**knobs)
    return policy


def make_budget(
    spec: str, capacity: float, default_size: float | None = None, counts_models: bool = False
) -> Budget:
    """The memory budget of ``capacity`` bytes (``counts_models``: models, each of size 1)
    for the policy ``spec``, with its way of choosing what stays loaded (see the module
    docstring)."""
    rule, keep_idle = _BUDGET_RULES.get(parse_policy(spec), ("lru", False))
    return Budget(
        capacity,
        rule=rule,
        keep_idle=keep_idle,
        default_size=1.0 if counts_models else default_size,
        counts_models=counts_models,
    )


__all__ = ["POLICY_NAMES", "PolicyUnavailable", "make_budget", "make_policy", "parse_policy"]
