"""Faust agents: decode, hand to the engine, publish. One module per concern."""

from agents import alerts, metrics, usage, web

__all__ = ["alerts", "metrics", "usage", "web"]
