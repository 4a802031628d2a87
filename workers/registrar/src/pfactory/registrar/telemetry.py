"""The registrar's metrics: versions as they are committed, and the registry's size by status.

The size is a count of every version in each status (``VersionIndex.query`` by status, a page of
up to 1000 records at a time). The index has no cheaper count: on DynamoDB that query reads whole
items from the ``by_status`` index, so the cost grows with the registry. The count therefore runs
in the background, off the registration path: once at start, every ``interval_s`` (which also
catches status changes made by the gateway or the scheduler), and soon after a registration, but
never twice within ``min_gap_s`` (a burst of registrations costs one count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pfactory.registry.index import VersionIndex
from pfactory.registry.model import ModelVersion, VersionStatus
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics

log = logging.getLogger("pfactory.registrar.telemetry")

PAGE_SIZE = 1000
"""The largest page the index serves."""


class RegistryMetrics:
    """Counts committed versions, and reports how many versions the registry holds in each status."""

    def __init__(
        self, index: VersionIndex, metrics: Metrics, *, interval_s: float = 300.0, min_gap_s: float = 30.0
    ) -> None:
        if interval_s <= 0 or min_gap_s < 0:
            raise ValueError(
                f"interval_s must be above 0 and min_gap_s at least 0 (got {interval_s}, {min_gap_s})"
            )
        self.index = index
        self.metrics = metrics
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self._changed = asyncio.Event()

    def committed(self, version: ModelVersion) -> None:
        """Count a version this registrar just committed, and ask for a fresh count of the registry."""
        self.metrics.emit(
            catalog.MODELS_REGISTERED, model=version.model_name, feature_set=str(version.feature_set)
        )
        self._changed.set()

    async def count(self) -> dict[VersionStatus, int]:
        """How many committed versions are in each status (every status, zeros included)."""
        counts: dict[VersionStatus, int] = {}
        for status in VersionStatus:
            total, cursor = 0, None
            while True:
                page = await self.index.query(status=status, limit=PAGE_SIZE, cursor=cursor)
                total += len(page.items)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            counts[status] = total
        return counts

    async def report(self) -> None:
        """Count the registry and emit one gauge value per status."""
        for status, total in (await self.count()).items():
            self.metrics.emit(catalog.REGISTRY_VERSIONS, total, status=status.value)

    async def run(self) -> None:
        """Report until cancelled: at once, then after each registration or ``interval_s``."""
        while True:
            started = time.monotonic()
            self._changed.clear()  # a registration committed during the count asks for the next one
            try:
                await self.report()
            except Exception as error:  # an index outage skips a count; the next one may pass
                log.warning("counting the registry's versions failed: %r", error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._changed.wait()
            await asyncio.sleep(max(0.0, self.min_gap_s - (time.monotonic() - started)))
