"""Faust agents: decode, hand to the engine, publish. One module per concern."""

from agents import alerts, control, health, metrics, recovery, undecodable, usage, web

__all__ = [
    "alerts",
    "control",
    "health",
    "metrics",
    "recovery",
    "undecodable",
    "usage",
    "web",
]
