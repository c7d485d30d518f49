"""The worker as Faust's command line finds it: ``faust -A agents.main worker`` (settings
from the environment; ``warmcast run`` and ``warmcast worker`` do the same, with flags)."""

from agents import build_app

app = build_app()
