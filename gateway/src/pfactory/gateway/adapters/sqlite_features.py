"""The feature-set catalog part of the SQLite gateway store (mixed into ``SqliteGatewayStore``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar, cast

from pfactory.gateway.feature_catalog import (
    FeatureSetRegistration,
    FeatureSetSummaryRecord,
    FeatureSetVersionRecord,
    LineageMatch,
    LineageOrigin,
    PartitionRecord,
    RegistrationOutcome,
    RegistrationResult,
)

T = TypeVar("T")

FEATURE_SCHEMA = """
CREATE TABLE IF NOT EXISTS feature_sets (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    config TEXT,
    config_hash TEXT,
    features TEXT NOT NULL DEFAULT '[]',
    registered_by TEXT,
    registered_at TEXT NOT NULL,
    job_id TEXT,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feature_partitions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    ds TEXT NOT NULL,
    status TEXT NOT NULL,
    uri TEXT,
    rows INTEGER,
    columns TEXT NOT NULL DEFAULT '[]',
    validation TEXT NOT NULL DEFAULT '{}',
    failing_expectations TEXT NOT NULL DEFAULT '[]',
    reason TEXT,
    job_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    PRIMARY KEY (name, version, ds)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feature_lineage (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    feature TEXT NOT NULL,
    source_column TEXT NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (name, version, origin, feature, source_column)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feature_lineage_column ON feature_lineage (source_column);
"""


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class SqliteFeatureCatalog:
    """``FeatureCatalogStore`` on the gateway's SQLite connection; the host class supplies ``_run``/``_tx``."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def register_feature_set(self, registration: FeatureSetRegistration) -> RegistrationResult:
        """Insert unless present; fill a config-less row; report a conflicting config."""
        reg = registration

        def register(conn: sqlite3.Connection) -> RegistrationResult:
            row = conn.execute(
                "SELECT config_hash FROM feature_sets WHERE name = ? AND version = ?", (reg.name, reg.version)
            ).fetchone()
            values = (
                json.dumps(reg.config),
                reg.config_hash,
                json.dumps(reg.features),
                reg.registered_by,
                _ts(reg.registered_at),
                reg.job_id,
            )
            if row is None:
                conn.execute(
                    "INSERT INTO feature_sets (config, config_hash, features, registered_by, registered_at, "
                    "job_id, name, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, reg.name, reg.version),
                )
                outcome = RegistrationOutcome.CREATED
            elif row["config_hash"] is None:
                conn.execute(
                    "UPDATE feature_sets SET config = ?, config_hash = ?, features = ?, registered_by = ?, "
                    "registered_at = min(registered_at, ?), job_id = ? WHERE name = ? AND version = ?",
                    (*values, reg.name, reg.version),
                )
                outcome = RegistrationOutcome.CREATED
            elif row["config_hash"] == reg.config_hash:
                outcome = RegistrationOutcome.UNCHANGED
            else:
                outcome = RegistrationOutcome.CONFLICT
            if outcome is RegistrationOutcome.CREATED:
                _replace_lineage(conn, reg.name, reg.version, "declared", reg.declared_lineage())
            record = _version_rows(conn, "WHERE f.name = ? AND f.version = ?", (reg.name, reg.version))[0]
            return RegistrationResult(outcome, record)

        return await self._tx(register)

    async def record_partition(self, record: PartitionRecord, lineage: dict[str, list[str]] | None) -> bool:
        """Upsert the day unless a newer event is held; a good day replaces the derived lineage."""
        at = _ts(record.occurred_at)

        def upsert(conn: sqlite3.Connection) -> bool:
            held = conn.execute(
                "SELECT occurred_at, event_id FROM feature_partitions WHERE name = ? AND version = ? AND ds = ?",
                (record.name, record.version, record.ds.isoformat()),
            ).fetchone()
            if held is not None and (held["event_id"] == record.event_id or held["occurred_at"] > at):
                return False
            conn.execute(
                "INSERT OR IGNORE INTO feature_sets (name, version, registered_at) VALUES (?, ?, ?)",
                (record.name, record.version, at),
            )
            conn.execute(
                "INSERT OR REPLACE INTO feature_partitions (name, version, ds, status, uri, rows, columns, "
                "validation, failing_expectations, reason, job_id, event_id, occurred_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.version,
                    record.ds.isoformat(),
                    record.status,
                    record.uri,
                    record.rows,
                    json.dumps(record.columns),
                    json.dumps(record.validation, default=str),
                    json.dumps(record.failing_expectations, default=str),
                    record.reason,
                    record.job_id,
                    record.event_id,
                    at,
                ),
            )
            if lineage:
                _replace_lineage(conn, record.name, record.version, "derived", lineage)
            return True

        return await self._tx(upsert)

    async def list_feature_sets(self, *, limit: int, after_name: str | None) -> list[FeatureSetSummaryRecord]:
        """Names in order with their versions."""

        def read(conn: sqlite3.Connection) -> list[FeatureSetSummaryRecord]:
            rows = conn.execute(
                "SELECT name, group_concat(version, char(31)) AS versions, min(registered_at) AS at "
                "FROM feature_sets WHERE name > ? GROUP BY name ORDER BY name LIMIT ?",
                (after_name or "", limit),
            ).fetchall()
            return [
                FeatureSetSummaryRecord(
                    row["name"], str(row["versions"]).split("\x1f"), datetime.fromisoformat(row["at"])
                )
                for row in rows
            ]

        return await self._run(read)

    async def list_feature_set_versions(self, name: str) -> list[FeatureSetVersionRecord]:
        """Every version of ``name``."""
        return await self._run(lambda conn: _version_rows(conn, "WHERE f.name = ?", (name,)))

    async def get_feature_set_version(self, name: str, version: str) -> FeatureSetVersionRecord | None:
        """One version or None."""
        rows = await self._run(
            lambda conn: _version_rows(conn, "WHERE f.name = ? AND f.version = ?", (name, version))
        )
        return rows[0] if rows else None

    async def list_partitions(
        self, name: str, version: str, *, start: date | None, end: date | None
    ) -> list[PartitionRecord]:
        """Recorded days by ds."""
        sql = "SELECT * FROM feature_partitions WHERE name = ? AND version = ?"
        params: list[Any] = [name, version]
        if start is not None:
            sql += " AND ds >= ?"
            params.append(start.isoformat())
        if end is not None:
            sql += " AND ds <= ?"
            params.append(end.isoformat())
        rows = await self._run(lambda c: c.execute(sql + " ORDER BY ds", params).fetchall())
        return [_partition(row) for row in rows]

    async def get_partition(self, name: str, version: str, ds: date) -> PartitionRecord | None:
        """One recorded day or None."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT * FROM feature_partitions WHERE name = ? AND version = ? AND ds = ?",
                (name, version, ds.isoformat()),
            ).fetchone()
        )
        return _partition(row) if row else None

    async def feature_lineage(self, name: str, version: str) -> dict[str, tuple[LineageOrigin, list[str]]]:
        """Derived lineage when recorded, else declared."""

        def read(conn: sqlite3.Connection) -> dict[str, tuple[LineageOrigin, list[str]]]:
            rows = conn.execute(
                "SELECT origin, feature, source_column FROM feature_lineage WHERE name = ? AND version = ? "
                "ORDER BY feature, source_column",
                (name, version),
            ).fetchall()
            origin: LineageOrigin = "derived" if any(r["origin"] == "derived" for r in rows) else "declared"
            lineage: dict[str, tuple[LineageOrigin, list[str]]] = {}
            for row in rows:
                if row["origin"] == origin:
                    lineage.setdefault(row["feature"], (origin, []))[1].append(row["source_column"])
            return lineage

        return await self._run(read)

    async def features_on_source_column(self, column: str) -> list[LineageMatch]:
        """Features deriving from ``column``; per version, derived lineage wins over declared."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT name, version, feature, origin FROM feature_lineage AS l WHERE source_column = ? "
                "AND (origin = 'derived' OR NOT EXISTS (SELECT 1 FROM feature_lineage AS d "
                "WHERE d.name = l.name AND d.version = l.version AND d.origin = 'derived')) "
                "ORDER BY name, version, feature",
                (column,),
            ).fetchall()
        )
        return [LineageMatch(r["name"], r["version"], r["feature"], r["origin"]) for r in rows]


def _replace_lineage(
    conn: sqlite3.Connection, name: str, version: str, origin: str, lineage: dict[str, list[str]]
) -> None:
    conn.execute(
        "DELETE FROM feature_lineage WHERE name = ? AND version = ? AND origin = ?", (name, version, origin)
    )
    conn.executemany(
        "INSERT OR IGNORE INTO feature_lineage (name, version, feature, source_column, origin) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (name, version, feature, column, origin)
            for feature, columns in lineage.items()
            for column in columns
        ],
    )


def _version_rows(
    conn: sqlite3.Connection, where: str, params: tuple[Any, ...]
) -> list[FeatureSetVersionRecord]:
    rows = conn.execute(
        "SELECT f.*, "
        "(SELECT count(*) FROM feature_partitions p WHERE p.name = f.name AND p.version = f.version "
        " AND p.status = 'good') AS good_days, "
        "(SELECT count(*) FROM feature_partitions p WHERE p.name = f.name AND p.version = f.version "
        " AND p.status = 'failed') AS failed_days, "
        "(SELECT min(ds) FROM feature_partitions p WHERE p.name = f.name AND p.version = f.version) AS first_ds, "
        "(SELECT max(ds) FROM feature_partitions p WHERE p.name = f.name AND p.version = f.version) AS last_ds, "
        "(SELECT max(occurred_at) FROM feature_partitions p WHERE p.name = f.name AND p.version = f.version) "
        " AS last_at "
        f"FROM feature_sets AS f {where}",  # where is a fixed clause with placeholders
        params,
    ).fetchall()
    return [
        FeatureSetVersionRecord(
            name=row["name"],
            version=row["version"],
            config=json.loads(row["config"]) if row["config"] else None,
            config_hash=row["config_hash"],
            features=cast(list[dict[str, Any]], json.loads(row["features"])),
            registered_by=row["registered_by"],
            registered_at=datetime.fromisoformat(row["registered_at"]),
            job_id=row["job_id"],
            good_days=row["good_days"],
            failed_days=row["failed_days"],
            first_ds=date.fromisoformat(row["first_ds"]) if row["first_ds"] else None,
            last_ds=date.fromisoformat(row["last_ds"]) if row["last_ds"] else None,
            last_materialised_at=datetime.fromisoformat(row["last_at"]) if row["last_at"] else None,
        )
        for row in rows
    ]


def _partition(row: sqlite3.Row) -> PartitionRecord:
    return PartitionRecord(
        name=row["name"],
        version=row["version"],
        ds=date.fromisoformat(row["ds"]),
        status=row["status"],
        uri=row["uri"],
        rows=row["rows"],
        columns=json.loads(row["columns"]),
        validation=json.loads(row["validation"]),
        reason=row["reason"],
        job_id=row["job_id"],
        event_id=row["event_id"],
        occurred_at=datetime.fromisoformat(row["occurred_at"]),
        failing_expectations=json.loads(row["failing_expectations"]),
    )
