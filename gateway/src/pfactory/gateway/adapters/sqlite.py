"""SQLite backend of the gateway store: WAL, one connection, every call on one worker thread."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pfactory.contracts.events import Envelope, JobKind, JobStatus, JobStatusChanged
from pfactory.gateway.adapters.sqlite_features import FEATURE_SCHEMA, SqliteFeatureCatalog
from pfactory.gateway.store import (
    ApiKeyRecord,
    JobRecord,
    OutboxBacklog,
    OutboxRow,
    StatusOutcome,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    reason TEXT,
    progress TEXT,
    config TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT '{}',
    submitted_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    status_at TEXT,
    request_event_id TEXT NOT NULL,
    request_envelope TEXT NOT NULL,
    request_topic TEXT NOT NULL,
    request_key TEXT,
    requested_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs (name, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope TEXT NOT NULL,
    topic TEXT NOT NULL,
    key TEXT,
    created_at TEXT NOT NULL,
    published_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (published_at, id);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    last_used_at TEXT
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
"""

# accepted < queued < running < terminal; a job only moves right.
_RANK = {
    JobStatus.ACCEPTED: 0,
    JobStatus.QUEUED: 1,
    JobStatus.RUNNING: 2,
    JobStatus.SUCCEEDED: 3,
    JobStatus.FAILED: 3,
}
_TERMINAL = tuple(status.value for status in JobStatus if status.terminal)


def _ts(moment: datetime) -> str:
    # fixed width, so text order is time order
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _now() -> str:
    return _ts(datetime.now(UTC))


class SqliteGatewayStore(SqliteFeatureCatalog):
    """Jobs, outbox, API keys, feed cursors and the feature-set catalog in one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite")
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA + FEATURE_SCHEMA)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def in_transaction(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return value

        return await self._run(in_transaction)

    async def ping(self) -> None:
        """Raise when the database cannot answer."""
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """Close the connection and its worker thread."""
        await self._run(lambda conn: conn.close())
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ jobs

    async def accept_job(self, job: JobRecord, envelope: Envelope, topic: str, key: str | None) -> None:
        """Insert the job and its outbox row in one transaction."""
        raw = envelope.model_dump_json()
        now = _now()

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO jobs (job_id, kind, name, status, stage, config, submitted_by, created_at, "
                "updated_at, request_event_id, request_envelope, request_topic, request_key, requested_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.kind.value,
                    job.name,
                    job.status.value,
                    job.stage,
                    json.dumps(job.config),
                    job.submitted_by,
                    _ts(job.created_at),
                    _ts(job.updated_at),
                    envelope.event_id,
                    raw,
                    topic,
                    key,
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO outbox (envelope, topic, key, created_at) VALUES (?, ?, ?, ?)",
                (raw, topic, key, now),
            )

        await self._tx(insert)

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job or None."""
        row = await self._run(
            lambda c: c.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        )
        return _job(row) if row else None

    async def list_jobs(
        self,
        *,
        status: JobStatus | None,
        kind: JobKind | None,
        name: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[JobRecord]:
        """Newest first, keyset-paginated on ``seq``."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("kind", kind), ("name", name)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(str(value))
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ?"  # columns are fixed names
        rows = await self._run(lambda c: c.execute(sql, (*params, limit)).fetchall())
        return [_job(row) for row in rows]

    async def apply_status(self, event: JobStatusChanged, occurred_at: datetime) -> StatusOutcome:
        """Apply a status event monotonically."""
        at = _ts(occurred_at)

        def apply(conn: sqlite3.Connection) -> StatusOutcome:
            row = conn.execute(
                "SELECT status, status_at, result FROM jobs WHERE job_id = ?", (event.job_id,)
            ).fetchone()
            if row is None:
                return StatusOutcome.UNKNOWN_JOB
            current = JobStatus(row["status"])
            if current.terminal:
                return StatusOutcome.ALREADY_TERMINAL
            if _RANK[event.status] < _RANK[current]:
                return StatusOutcome.STALE
            if _RANK[event.status] == _RANK[current] and row["status_at"] and at <= row["status_at"]:
                return StatusOutcome.STALE
            progress = event.progress.model_dump_json() if event.progress else None
            # each service adds its part of the result (the trainer its trials, the registrar the
            # version): later events extend the record rather than wipe what earlier stages reported
            result = {**(json.loads(row["result"]) if row["result"] else {}), **event.result}
            conn.execute(
                "UPDATE jobs SET status = ?, stage = ?, progress = coalesce(?, progress), reason = ?, "
                "result = ?, status_at = ?, updated_at = ? WHERE job_id = ?",
                (
                    event.status.value,
                    event.stage,
                    progress,
                    event.reason,
                    json.dumps(result),
                    at,
                    _now(),
                    event.job_id,
                ),
            )
            return StatusOutcome.APPLIED

        return await self._tx(apply)

    async def requeue_requests(self, *, idle_before: datetime | None) -> int:
        """Queue the request envelope of non-terminal jobs again (same event_id)."""
        now = _now()
        marks = ",".join("?" * len(_TERMINAL))
        sql = (
            f"SELECT job_id, request_envelope, request_topic, request_key FROM jobs "
            f"WHERE status NOT IN ({marks}) AND request_envelope NOT IN "
            f"(SELECT envelope FROM outbox WHERE published_at IS NULL)"
        )
        params: list[Any] = list(_TERMINAL)
        if idle_before is not None:
            sql += " AND updated_at < ? AND requested_at < ?"
            params += [_ts(idle_before), _ts(idle_before)]

        def requeue(conn: sqlite3.Connection) -> int:
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
            for row in rows:
                conn.execute(
                    "INSERT INTO outbox (envelope, topic, key, created_at) VALUES (?, ?, ?, ?)",
                    (row["request_envelope"], row["request_topic"], row["request_key"], now),
                )
                conn.execute("UPDATE jobs SET requested_at = ? WHERE job_id = ?", (now, row["job_id"]))
            return len(rows)

        return await self._tx(requeue)

    # ------------------------------------------------------------------ outbox

    async def pending(self, limit: int) -> list[OutboxRow]:
        """Unpublished rows in insertion order."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT * FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        )
        return [
            OutboxRow(
                row["id"],
                Envelope.model_validate_json(row["envelope"]),
                row["topic"],
                row["key"],
                row["attempts"],
            )
            for row in rows
        ]

    async def enqueue(self, envelope: Envelope, topic: str, key: str | None) -> None:
        """Insert an outbox row alone."""
        raw, now = envelope.model_dump_json(), _now()
        await self._tx(
            lambda c: c.execute(
                "INSERT INTO outbox (envelope, topic, key, created_at) VALUES (?, ?, ?, ?)",
                (raw, topic, key, now),
            )
        )

    async def mark_published(self, row_id: int) -> None:
        """Stamp the row published."""
        await self._run(
            lambda c: c.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (_now(), row_id))
        )

    async def mark_failed(self, row_id: int, error: str) -> None:
        """Count the attempt and keep the error."""
        await self._run(
            lambda c: c.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:2000], row_id),
            )
        )

    async def backlog(self) -> OutboxBacklog:
        """Count and age of unpublished rows, with the newest error."""

        def summarise(conn: sqlite3.Connection) -> OutboxBacklog:
            row = conn.execute(
                "SELECT count(*) AS n, min(created_at) AS oldest FROM outbox WHERE published_at IS NULL"
            ).fetchone()
            error = conn.execute(
                "SELECT last_error FROM outbox WHERE published_at IS NULL AND last_error IS NOT NULL "
                "ORDER BY id LIMIT 1"
            ).fetchone()
            return OutboxBacklog(row["n"], _dt(row["oldest"]), error["last_error"] if error else None)

        return await self._run(summarise)

    # ------------------------------------------------------------------ API keys

    async def add_key(self, record: ApiKeyRecord, secret_hash: str) -> None:
        """Insert or replace a key."""
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO api_keys (key_id, name, scopes, secret_hash, created_at, revoked_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.key_id,
                    record.name,
                    json.dumps(sorted(record.scopes)),
                    secret_hash,
                    _ts(record.created_at),
                    _ts(record.revoked_at) if record.revoked_at else None,
                ),
            )
        )

    async def find_key(self, key_id: str) -> tuple[ApiKeyRecord, str] | None:
        """The key and its hash, or None."""
        row = await self._run(
            lambda c: c.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        )
        return (_key(row), row["secret_hash"]) if row else None

    async def list_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        rows = await self._run(lambda c: c.execute("SELECT * FROM api_keys ORDER BY created_at").fetchall())
        return [_key(row) for row in rows]

    async def revoke_key(self, key_id: str) -> bool:
        """Stamp the key revoked (the first revocation time is kept)."""
        cursor = await self._run(
            lambda c: c.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?", (_now(), key_id)
            )
        )
        return cursor.rowcount > 0

    async def touch_key(self, key_id: str) -> None:
        """Stamp the key's last use."""
        await self._run(
            lambda c: c.execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (_now(), key_id))
        )

    # ------------------------------------------------------------------ feed cursors

    async def get_cursor(self, name: str) -> int:
        """The stored position of a feed, 0 when none."""
        row = await self._run(
            lambda c: c.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        )
        return int(row["value"]) if row else 0

    async def set_cursor(self, name: str, value: int) -> None:
        """Store a feed's position in one transaction."""
        now = _now()

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (name, value, now),
            )

        await self._tx(upsert)


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"],
        kind=JobKind(row["kind"]),
        name=row["name"],
        status=JobStatus(row["status"]),
        config=json.loads(row["config"]),
        submitted_by=row["submitted_by"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        request_event_id=row["request_event_id"],
        stage=row["stage"],
        progress=json.loads(row["progress"]) if row["progress"] else None,
        reason=row["reason"],
        result=json.loads(row["result"]),
        seq=row["seq"],
    )


def _key(row: sqlite3.Row) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row["key_id"],
        name=row["name"],
        scopes=frozenset(json.loads(row["scopes"])),
        created_at=datetime.fromisoformat(row["created_at"]),
        revoked_at=_dt(row["revoked_at"]),
        last_used_at=_dt(row["last_used_at"]),
    )
