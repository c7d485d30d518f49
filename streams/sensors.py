"""Faust's sensors as warmcast runs them: without the Monitor.

Faust's Monitor keeps statistics of every message, event and table access for Faust's own
statistics pages (four calls per message, about 3.4 µs on their own, and more in a busy
worker). warmcast's Prometheus metrics and ``/health`` say what a worker does, so the
monitor is left out of the sensors unless those pages are turned on
(``APP_WEB_STATS_ENABLED``). Faust still tells it of commits and end offsets directly.
"""

from __future__ import annotations

from collections.abc import Iterable

import faust
from mode.types import ServiceT


class UnmonitoredApp(faust.App):
    """A Faust app whose Monitor sensor hears nothing unless its statistics pages are on."""

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        services = super().on_init_dependencies()
        if not self.conf.web_stats_enabled:
            self.sensors.remove(self.monitor)
        return services
