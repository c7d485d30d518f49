"""Faust agents: decode, hand to the engine, publish. One module per concern."""

from agents import alerts, health, metrics, usage, web

__all__ = ["alerts", "health", "metrics", "usage", "web"]
