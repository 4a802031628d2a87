"""The incident state in one SQLite file (WAL): open incidents by dedup key, and handled event ids.

Every change is one transaction with the mark of the event that caused it, so a crash either did
both or neither; a redelivered event finds its mark and changes nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pfactory.alerter.model import Action, Incident
from pfactory.contracts.events import Severity

HANDLED_KEPT = timedelta(days=30)
"""Handled event ids older than this are forgotten (far beyond the topic's retention)."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dedup_key TEXT NOT NULL, check_name TEXT NOT NULL, severity TEXT NOT NULL, action TEXT NOT NULL,
        rule TEXT NOT NULL, summary TEXT NOT NULL, opened_at TEXT NOT NULL,
        model_name TEXT, feature_set_name TEXT, routing_key_id TEXT, paged INTEGER NOT NULL,
        repeats INTEGER NOT NULL DEFAULT 0, acknowledged_at TEXT, closed_at TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS one_open_incident ON incidents (dedup_key) WHERE closed_at IS NULL",
    """CREATE TABLE IF NOT EXISTS handled_events (
        event_id TEXT PRIMARY KEY, handled_at TEXT NOT NULL) WITHOUT ROWID""",
)
_COLUMNS = (
    "dedup_key, check_name, severity, action, rule, summary, opened_at, model_name, feature_set_name, "
    "routing_key_id, paged, repeats, acknowledged_at"
)


def _incident(row: tuple[object, ...]) -> Incident:
    (
        key,
        check,
        severity,
        action,
        rule,
        summary,
        opened,
        model,
        feature_set,
        key_id,
        paged,
        repeats,
        acked,
    ) = row
    return Incident(
        dedup_key=str(key),
        check=str(check),
        severity=Severity(str(severity)),
        action=Action(str(action)),
        rule=str(rule),
        summary=str(summary),
        opened_at=datetime.fromisoformat(str(opened)),
        model_name=None if model is None else str(model),
        feature_set_name=None if feature_set is None else str(feature_set),
        routing_key_id=None if key_id is None else str(key_id),
        paged=bool(paged),
        repeats=int(str(repeats)),
        acknowledged_at=None if acked is None else datetime.fromisoformat(str(acked)),
    )


class SqliteIncidentStore:
    """The :class:`pfactory.alerter.ports.IncidentStore` in ``<state_dir>/incidents.sqlite3``."""

    def __init__(self, path: str | Path) -> None:
        """Use (and create on first use) the database file at ``path``."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._connection is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    self.path, timeout=30, check_same_thread=False, isolation_level=None
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")  # an open incident must survive a power cut
                for statement in _SCHEMA:
                    connection.execute(statement)
                cutoff = (datetime.now(UTC) - HANDLED_KEPT).isoformat()
                connection.execute("DELETE FROM handled_events WHERE handled_at < ?", (cutoff,))
                self._connection = connection
            yield self._connection

    def _seen(self, event_id: str) -> bool:
        with self._db() as db:
            return (
                db.execute("SELECT 1 FROM handled_events WHERE event_id = ?", (event_id,)).fetchone()
                is not None
            )

    def _get_open(self, dedup_key: str) -> Incident | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE dedup_key = ? AND closed_at IS NULL", (dedup_key,)
            ).fetchone()
        return _incident(row) if row is not None else None

    def _list_open(self) -> list[Incident]:
        with self._db() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE closed_at IS NULL ORDER BY id"
            ).fetchall()
        return [_incident(row) for row in rows]

    def _record(
        self,
        event_id: str,
        opened: Incident | None,
        repeat_of: str | None,
        closed: str | None,
        at: datetime,
    ) -> None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR IGNORE INTO handled_events (event_id, handled_at) VALUES (?, ?)",
                    (event_id, datetime.now(UTC).isoformat()),
                )
                if opened is not None:
                    db.execute(
                        f"INSERT OR IGNORE INTO incidents ({_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                        (
                            opened.dedup_key,
                            opened.check,
                            opened.severity.value,
                            opened.action.value,
                            opened.rule,
                            opened.summary,
                            opened.opened_at.isoformat(),
                            opened.model_name,
                            opened.feature_set_name,
                            opened.routing_key_id,
                            int(opened.paged),
                            opened.repeats,
                            None,
                        ),
                    )
                if repeat_of is not None:
                    db.execute(
                        "UPDATE incidents SET repeats = repeats + 1 WHERE dedup_key = ? AND closed_at IS NULL",
                        (repeat_of,),
                    )
                if closed is not None:
                    db.execute(
                        "UPDATE incidents SET closed_at = ? WHERE dedup_key = ? AND closed_at IS NULL",
                        (at.isoformat(), closed),
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _acknowledge(self, dedup_key: str, at: datetime) -> Incident | None:
        with self._db() as db:
            db.execute(
                "UPDATE incidents SET acknowledged_at = ? WHERE dedup_key = ? AND closed_at IS NULL",
                (at.isoformat(), dedup_key),
            )
        return self._get_open(dedup_key)

    async def seen(self, event_id: str) -> bool:
        """See :meth:`pfactory.alerter.ports.IncidentStore.seen`."""
        return await asyncio.to_thread(self._seen, event_id)

    async def get_open(self, dedup_key: str) -> Incident | None:
        """See :meth:`pfactory.alerter.ports.IncidentStore.get_open`."""
        return await asyncio.to_thread(self._get_open, dedup_key)

    async def list_open(self) -> list[Incident]:
        """See :meth:`pfactory.alerter.ports.IncidentStore.list_open`."""
        return await asyncio.to_thread(self._list_open)

    async def record(
        self,
        event_id: str,
        *,
        opened: Incident | None = None,
        repeat_of: str | None = None,
        closed: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """See :meth:`pfactory.alerter.ports.IncidentStore.record`."""
        await asyncio.to_thread(self._record, event_id, opened, repeat_of, closed, at or datetime.now(UTC))

    async def acknowledge(self, dedup_key: str, at: datetime) -> Incident | None:
        """See :meth:`pfactory.alerter.ports.IncidentStore.acknowledge`."""
        return await asyncio.to_thread(self._acknowledge, dedup_key, at)

    def close(self) -> None:
        """Close the connection (a later call reopens it)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
