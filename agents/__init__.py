"""Faust agents: decode, hand to the engine, publish. One module per concern."""

from agents import alerts, control, delivery, health, metrics, recovery, undecodable, usage, web

# Last: it counts the crashes of every agent registered above.
from agents import probes  # isort: skip

__all__ = [
    "alerts",
    "control",
    "delivery",
    "health",
    "metrics",
    "probes",
    "recovery",
    "undecodable",
    "usage",
    "web",
]
