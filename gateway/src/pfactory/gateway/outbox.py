"""The outbox relay: publishes accepted envelopes in order, retrying until the broker takes them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pfactory.gateway.sink import EnvelopeSink
from pfactory.gateway.store import JobStore, Outbox

log = logging.getLogger("pfactory.gateway.outbox")


@dataclass
class RelayState:
    """What the relay last saw of the broker, for ``/ready``."""

    broker_reachable: bool | None = None  # None: nothing published yet
    last_error: str | None = None
    last_published_at: datetime | None = None
    consecutive_failures: int = 0


class OutboxRelay:
    """Drains the outbox through a sink; never loses a row, never blocks the API.

    A row is marked published only after the sink returned, so a crash in between re-publishes it
    (same event_id): delivery is at least once and consumers dedupe.
    """

    def __init__(
        self,
        outbox: Outbox,
        jobs: JobStore,
        sink: EnvelopeSink,
        *,
        poll_interval_s: float = 0.5,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 10.0,
        publish_timeout_s: float = 10.0,
        stale_after_s: float | None = None,
        batch_size: int = 100,
    ) -> None:
        self.outbox = outbox
        self.jobs = jobs
        self.sink = sink
        self.poll_interval_s = poll_interval_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.publish_timeout_s = publish_timeout_s
        self.stale_after_s = stale_after_s
        self.batch_size = batch_size
        self.state = RelayState()
        self._wake = asyncio.Event()
        self._last_sweep = datetime.now(UTC)

    def wake(self) -> None:
        """Tell the relay a row was just written (it would find it at the next poll anyway)."""
        self._wake.set()

    async def republish_unfinished(self) -> int:
        """Queue the request of every non-terminal job again: the broker may have lost it."""
        queued = await self.jobs.requeue_requests(idle_before=None)
        if queued:
            log.info("re-queued the requests of %d unfinished job(s)", queued)
            self.wake()
        return queued

    async def drain(self) -> int:
        """Publish pending rows in order until none is left.

        Returns:
            How many rows were published.

        Raises:
            Exception: the first publish failure (that row and those after it stay pending).
        """
        published = 0
        while rows := await self.outbox.pending(self.batch_size):
            for row in rows:
                try:
                    async with asyncio.timeout(self.publish_timeout_s):
                        await self.sink.publish(row.envelope, row.topic, row.key)
                except Exception as error:
                    message = f"{type(error).__name__}: {error}"
                    await self.outbox.mark_failed(row.row_id, message)
                    self.state.broker_reachable = False
                    self.state.last_error = message
                    self.state.consecutive_failures += 1
                    raise
                await self.outbox.mark_published(row.row_id)
                published += 1
                self.state.broker_reachable = True
                self.state.consecutive_failures = 0
                self.state.last_published_at = datetime.now(UTC)
        return published

    async def _sweep_stale(self) -> None:
        if self.stale_after_s is None:
            return
        now = datetime.now(UTC)
        if now - self._last_sweep < timedelta(seconds=min(self.stale_after_s, 60.0)):
            return
        self._last_sweep = now
        queued = await self.jobs.requeue_requests(idle_before=now - timedelta(seconds=self.stale_after_s))
        if queued:
            log.info("re-queued the requests of %d idle job(s)", queued)

    async def run(self) -> None:
        """Relay until cancelled."""
        backoff = self.backoff_initial_s
        while True:
            self._wake.clear()  # before draining, so a row written meanwhile wakes the next wait
            try:
                await self._sweep_stale()
                await self.drain()
            except Exception as error:
                log.warning("outbox relay: %s; retrying in %.2f s", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            backoff = self.backoff_initial_s
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races the wake-up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()
