"""Gateway fixtures: settings on a temporary database with a bootstrap admin key; its registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pfactory.gateway.auth import new_api_key
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.wiring import Registry, build_registry


@pytest.fixture
def admin_key() -> str:
    """The raw bootstrap admin key of the test gateway."""
    return new_api_key()[0]


@pytest.fixture
def gateway_settings(tmp_path: Path, admin_key: str) -> GatewaySettings:
    """Gateway settings on a fresh SQLite file, fast relay and feed polling, bus off unless a test adds one."""
    return GatewaySettings(
        data_dir=tmp_path,
        bootstrap_admin_key=admin_key,  # type: ignore[arg-type]
        bus_enabled=False,
        outbox_poll_interval_s=0.05,
        registry_feed_interval_s=0.05,
        outbox_backoff_max_s=0.2,
        publish_timeout_s=3.0,
    )


@pytest.fixture
async def registry(gateway_settings: GatewaySettings) -> AsyncIterator[Registry]:
    """The registry the gateway uses (same folder and SQLite file), opened separately to seed it."""
    opened = await build_registry(gateway_settings.registry_settings())
    try:
        yield opened
    finally:
        await opened.close()
