"""The registry feed: ``ModelVersionChanged`` events derived from the registry's own change log.

The registry is the system of record: every change to a version (registration by the registrar,
status changes, overrides, aliases) appends an audit entry to it and moves it up the index's change
sequence in the same write. The feed follows that sequence (``VersionIndex.changes_since``) and
publishes one event per audit entry, so no change can be stored without its event eventually going
out, whoever made it and whenever the gateway crashed.

Delivery is at least once. ``changes_since`` reports each changed version once, in its latest state,
so the feed publishes the version's whole audit trail every time it changes; each entry keeps one
deterministic ``event_id`` (``uuid5`` of pair, version and entry index) and consumers dedupe on it.
The cursor is stored in the gateway's database only after every event of a batch was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pfactory.contracts.events import Envelope, ModelVersionChanged
from pfactory.gateway.sink import EnvelopeSink
from pfactory.gateway.store import CursorStore
from pfactory.registry.index import VersionIndex
from pfactory.registry.model import AuditEntry, ModelVersion, VersionStatus

log = logging.getLogger("pfactory.gateway.registry_feed")

PRODUCER = "gateway"
CURSOR_NAME = "registry-changes"
"""The name the feed's position is stored under in the gateway store."""

STATUS_ACTIONS = frozenset({"transition", "override"})
ALIAS_ACTIONS = frozenset({"alias_set", "alias_removed"})


def event_id_of(record: ModelVersion, index: int) -> str:
    """The deterministic event id of the ``index``-th audit entry of a version."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pf:registry/{record.pair}/{record.version}/{index}"))


def correlation_id_of(record: ModelVersion) -> str:
    """Ties every event of one version together: ``<pair>/v<version>``."""
    return f"{record.pair}/v{record.version}"


def changed_event(record: ModelVersion, entry: AuditEntry) -> ModelVersionChanged:
    """The ``ModelVersionChanged`` one audit entry of a version stands for.

    ``registered`` → ``registered`` (to the status it was committed in); ``transition`` and
    ``override`` → ``status``, or ``archived`` when the version was archived; ``alias_set`` and
    ``alias_removed`` keep their name, with the alias. Any other action is passed on as is.
    """
    from_status = to_status = alias = None
    action = entry.action
    if entry.action == "registered":
        to_status = entry.to
    elif entry.action in STATUS_ACTIONS:
        action = "archived" if entry.to == VersionStatus.ARCHIVED.value else "status"
        from_status, to_status = entry.from_, entry.to
    elif entry.action in ALIAS_ACTIONS:
        alias = entry.to if entry.action == "alias_set" else entry.from_
    else:
        from_status, to_status = entry.from_, entry.to
    return ModelVersionChanged(
        model_name=record.model_name,
        feature_set=record.feature_set,
        version=record.version,
        action=action,
        from_status=from_status,
        to_status=to_status,
        alias=alias,
        actor=entry.actor,
        reason=entry.reason,
        override=entry.action == "override",
    )


def envelopes_of(record: ModelVersion) -> list[Envelope]:
    """One envelope per audit entry of the version, oldest first; the same ones on every call."""
    correlation = correlation_id_of(record)
    envelopes = []
    for index, entry in enumerate(record.audit):
        envelope = Envelope.wrap(
            changed_event(record, entry),
            producer=PRODUCER,
            correlation_id=correlation,
            event_id=event_id_of(record, index),
        )
        envelopes.append(envelope.model_copy(update={"occurred_at": entry.at}))
    return envelopes


@dataclass
class FeedState:
    """What the feed last saw, for ``/ready``."""

    cursor: int | None = None  # None: not read from the store yet
    broker_reachable: bool | None = None  # None: nothing published yet
    last_error: str | None = None
    last_published_at: datetime | None = None
    consecutive_failures: int = 0


class RegistryFeed:
    """Publishes the registry's changes through a sink, in change order, never skipping one.

    Any failure (registry, broker, store) leaves the stored cursor where it was; the batch is read
    and published again after a back-off, with the same event ids.
    """

    def __init__(
        self,
        index: VersionIndex,
        cursors: CursorStore,
        sink: EnvelopeSink,
        *,
        poll_interval_s: float = 1.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 10.0,
        publish_timeout_s: float = 10.0,
        batch_size: int = 100,
        cursor_name: str = CURSOR_NAME,
    ) -> None:
        self.index = index
        self.cursors = cursors
        self.sink = sink
        self.poll_interval_s = poll_interval_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.publish_timeout_s = publish_timeout_s
        self.batch_size = batch_size
        self.cursor_name = cursor_name
        self.state = FeedState()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tell the feed the registry just changed (it would find the change at the next poll anyway)."""
        self._wake.set()

    async def _cursor(self) -> int:
        if self.state.cursor is None:
            self.state.cursor = await self.cursors.get_cursor(self.cursor_name)
        return self.state.cursor

    async def _publish(self, envelope: Envelope, key: str) -> None:
        try:
            async with asyncio.timeout(self.publish_timeout_s):
                await self.sink.publish(envelope, ModelVersionChanged.TOPIC, key)
        except Exception:
            self.state.broker_reachable = False
            self.state.consecutive_failures += 1
            raise
        self.state.broker_reachable = True
        self.state.consecutive_failures = 0
        self.state.last_published_at = datetime.now(UTC)

    async def step(self) -> bool:
        """Publish one batch of changes, then store the cursor after it.

        Returns:
            Whether the cursor moved (False: caught up with the registry).

        Raises:
            Exception: the first failure; the stored cursor does not move.
        """
        cursor = await self._cursor()
        batch = await self.index.changes_since(cursor, limit=self.batch_size)
        for record in batch.items:
            for envelope in envelopes_of(record):
                await self._publish(envelope, record.model_name)
        if batch.cursor == cursor:
            return False
        await self.cursors.set_cursor(self.cursor_name, batch.cursor)
        self.state.cursor = batch.cursor
        return True

    async def drain(self) -> int:
        """Publish batches until the feed has caught up with the registry.

        Returns:
            How many batches were published.

        Raises:
            Exception: the first failure (registry, broker or store); the batch is published again later.
        """
        batches = 0
        while await self.step():
            batches += 1
        return batches

    async def run(self) -> None:
        """Follow the registry until cancelled."""
        backoff = self.backoff_initial_s
        while True:
            self._wake.clear()  # before draining, so a change made meanwhile wakes the next wait
            try:
                await self.drain()
            except Exception as error:
                self.state.last_error = f"{type(error).__name__}: {error}"
                log.warning("registry feed: %s; retrying in %.2f s", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            backoff = self.backoff_initial_s
            self.state.last_error = None
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races the wake-up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()
