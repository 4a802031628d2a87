"""Idempotent handling: remember which events a handler finished, skip them when redelivered.

The mark is written *after* the handler succeeded. A crash between the two re-runs the handler on
redelivery, so domain handlers still make their writes idempotent (conditional writes, natural
keys); the store only saves repeated work and repeated side effects in the common case.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pfactory.bus.consumer import EnvelopeHandler
from pfactory.contracts.events import Envelope

log = logging.getLogger("pfactory.bus")


class ProcessedEvents(Protocol):
    """Which event ids each handler has processed successfully."""

    async def seen(self, handler: str, event_id: str) -> bool:
        """Whether ``handler`` already processed ``event_id``.

        Args:
            handler: the handler's stable name (e.g. ``"registrar.register_model"``).
            event_id: the envelope's event id.

        Returns:
            True when it was marked before.
        """
        ...

    async def mark(self, handler: str, event_id: str) -> None:
        """Record that ``handler`` processed ``event_id``; marking twice is harmless.

        Args:
            handler: the handler's stable name.
            event_id: the envelope's event id.
        """
        ...

    async def forget_before(self, cutoff: datetime) -> int:
        """Drop marks older than ``cutoff`` (older than the topics' retention, they can't recur).

        Args:
            cutoff: an aware datetime.

        Returns:
            How many marks were dropped.
        """
        ...


class InMemoryProcessedEvents:
    """Process-local marks, for tests and single-process embedded runs."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str], datetime] = {}

    async def seen(self, handler: str, event_id: str) -> bool:
        """See :meth:`ProcessedEvents.seen`."""
        return (handler, event_id) in self._marks

    async def mark(self, handler: str, event_id: str) -> None:
        """See :meth:`ProcessedEvents.mark`."""
        self._marks.setdefault((handler, event_id), datetime.now(UTC))

    async def forget_before(self, cutoff: datetime) -> int:
        """See :meth:`ProcessedEvents.forget_before`."""
        old = [key for key, at in self._marks.items() if at < cutoff]
        for key in old:
            del self._marks[key]
        return len(old)


class SqliteProcessedEvents:
    """Marks in a SQLite file (WAL mode), shared by the processes of one host."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS processed_events ("
        " handler TEXT NOT NULL, event_id TEXT NOT NULL, processed_at TEXT NOT NULL,"
        " PRIMARY KEY (handler, event_id)) WITHOUT ROWID"
    )

    def __init__(self, path: str | Path) -> None:
        """Use (and create on first use) the database file at ``path``."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(self._SCHEMA)
            self._connection = connection
        return self._connection

    def _seen(self, handler: str, event_id: str) -> bool:
        with self._lock:
            row = (
                self._connect()
                .execute(
                    "SELECT 1 FROM processed_events WHERE handler = ? AND event_id = ?", (handler, event_id)
                )
                .fetchone()
            )
        return row is not None

    def _mark(self, handler: str, event_id: str) -> None:
        with self._lock:
            self._connect().execute(
                "INSERT OR IGNORE INTO processed_events (handler, event_id, processed_at) VALUES (?, ?, ?)",
                (handler, event_id, datetime.now(UTC).isoformat()),
            )

    def _forget_before(self, cutoff: datetime) -> int:
        with self._lock:
            cursor = self._connect().execute(
                "DELETE FROM processed_events WHERE processed_at < ?", (cutoff.astimezone(UTC).isoformat(),)
            )
        return cursor.rowcount

    async def seen(self, handler: str, event_id: str) -> bool:
        """See :meth:`ProcessedEvents.seen`."""
        return await asyncio.to_thread(self._seen, handler, event_id)

    async def mark(self, handler: str, event_id: str) -> None:
        """See :meth:`ProcessedEvents.mark`."""
        await asyncio.to_thread(self._mark, handler, event_id)

    async def forget_before(self, cutoff: datetime) -> int:
        """See :meth:`ProcessedEvents.forget_before`."""
        return await asyncio.to_thread(self._forget_before, cutoff)

    def close(self) -> None:
        """Close the connection (a later call reopens it)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def idempotent(store: ProcessedEvents, name: str) -> Callable[[EnvelopeHandler], EnvelopeHandler]:
    """Skip envelopes whose event_id ``name`` already processed; mark each one after success.

    Args:
        store: where the marks live.
        name: the handler's stable name (marks are per handler: two handlers of one event both run).

    Returns:
        A decorator for ``async def handle(envelope: Envelope) -> None``.
    """

    def decorate(handler: EnvelopeHandler) -> EnvelopeHandler:
        @functools.wraps(handler)
        async def once(envelope: Envelope) -> None:
            if await store.seen(name, envelope.event_id):
                log.info("%s: skipping %s %s, already processed", name, envelope.type, envelope.event_id)
                return
            await handler(envelope)
            await store.mark(name, envelope.event_id)

        return once

    return decorate
