"""Faust's Monitor hears nothing in a warmcast app unless Faust's statistics pages are on."""

from __future__ import annotations

import uuid

import pytest

from streams.sensors import UnmonitoredApp


@pytest.mark.parametrize("stats_pages", [False, True])
def test_the_monitor_is_a_sensor_only_with_the_statistics_pages(stats_pages: bool) -> None:
    app = UnmonitoredApp(
        f"sensors-{uuid.uuid4().hex[:6]}",
        broker="kafka://127.0.0.1:1",
        web_stats_enabled=stats_pages,
    )
    app.on_init_dependencies()
    assert (app.monitor in app.sensors) is stats_pages
