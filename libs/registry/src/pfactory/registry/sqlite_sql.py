"""The SQLite schema and the SQL of the keyset-paged reads of ``SqliteVersionIndex``."""

from __future__ import annotations

from typing import Any

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry.index import check_limit, decode_cursor
from pfactory.registry.model import PairKey, VersionStatus

# Same logical schema as the DynamoDB table: pair counters, allocations by idempotency key,
# committed version documents with their query columns, alias pointers, the catalog of pairs with
# a committed version (backfilled once from ``versions`` in files older than the table), and a
# change sequence.
SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (pair TEXT PRIMARY KEY, next_version INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS allocations (
    pair TEXT NOT NULL, idempotency_key TEXT NOT NULL, version INTEGER NOT NULL,
    state TEXT NOT NULL, allocated_at TEXT NOT NULL,
    PRIMARY KEY (pair, idempotency_key), UNIQUE (pair, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    pair TEXT NOT NULL, version INTEGER NOT NULL, model_name TEXT NOT NULL,
    fs_name TEXT NOT NULL, fs_version TEXT NOT NULL, status TEXT NOT NULL,
    seq INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (pair, version)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_by_pair_status ON versions (pair, status, version);
CREATE INDEX IF NOT EXISTS versions_by_status ON versions (status, pair, version);
CREATE INDEX IF NOT EXISTS versions_by_feature_set ON versions (fs_name, fs_version, pair, version);
CREATE UNIQUE INDEX IF NOT EXISTS versions_by_seq ON versions (seq);
CREATE TABLE IF NOT EXISTS aliases (
    pair TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (pair, alias)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pairs (
    model_name TEXT NOT NULL, pair TEXT NOT NULL, fs_name TEXT NOT NULL, fs_version TEXT NOT NULL,
    PRIMARY KEY (model_name, pair)) WITHOUT ROWID;
INSERT OR IGNORE INTO pairs (model_name, pair, fs_name, fs_version)
    SELECT DISTINCT model_name, pair, fs_name, fs_version FROM versions WHERE NOT EXISTS (SELECT 1 FROM pairs);
CREATE TABLE IF NOT EXISTS sequence (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO sequence (name, value) VALUES ('changes', 0);
"""

Paged = tuple[str, list[Any], tuple[int, ...]]
"""SQL, its parameters (the limit fetched is one more than the page), and the sort-key columns."""


# INDEXED BY: without ANALYZE statistics SQLite prefers the primary key (pair, version) for the
# ORDER BY and filters status row by row, which grows with the pair's versions (measured: x7 from 10
# to 1,000 versions); the status index answers with one seek.
LIVE_SQL = (
    "SELECT doc FROM versions INDEXED BY versions_by_pair_status "
    "WHERE pair = ? AND status = 'live' ORDER BY version DESC LIMIT 1"
)


def list_sql(
    pair: PairKey, status: VersionStatus | None, newest_first: bool, limit: int, cursor: str | None
) -> Paged:
    """A pair's versions by number; served by the primary key or ``versions_by_pair_status``."""
    check_limit(limit)
    where: list[str] = ["pair = ?"]
    params: list[Any] = [str(pair)]
    if status is not None:
        where.append("status = ?")
        params.append(status.value)
    if cursor is not None:
        where.append("version < ?" if newest_first else "version > ?")
        params.append(int(decode_cursor(cursor)[0]))
    order = "DESC" if newest_first else "ASC"
    table = "versions INDEXED BY versions_by_pair_status" if status is not None else "versions"
    sql = f"SELECT doc, version FROM {table} WHERE {' AND '.join(where)} ORDER BY version {order} LIMIT ?"
    return sql, [*params, limit + 1], (1,)


def query_sql(
    status: VersionStatus | None, feature_set: str | FeatureSetRef | None, limit: int, cursor: str | None
) -> Paged:
    """Versions across pairs by status and/or feature set; served by the matching index."""
    check_limit(limit)
    if status is None and feature_set is None:
        raise ValueError("query needs a status, a feature set or both")
    where: list[str] = []
    params: list[Any] = []
    sort = ["pair", "version"]
    if feature_set is not None:
        where.append("fs_name = ?")
        params.append(feature_set if isinstance(feature_set, str) else feature_set.name)
        if isinstance(feature_set, FeatureSetRef):
            where.append("fs_version = ?")
            params.append(feature_set.version)
        sort = ["fs_version", "pair", "version"]
    if status is not None:
        where.append("status = ?")
        params.append(status.value)
    if cursor is not None:
        where.append(f"({', '.join(sort)}) > ({', '.join('?' * len(sort))})")
        params.extend(decode_cursor(cursor))
    columns = ", ".join(sort)
    sql = f"SELECT doc, {columns} FROM versions WHERE {' AND '.join(where)} ORDER BY {columns} LIMIT ?"
    return sql, [*params, limit + 1], tuple(range(1, len(sort) + 1))


def models_sql(limit: int, cursor: str | None) -> Paged:
    """Distinct model names of the pair catalog, by name; served by its primary key."""
    check_limit(limit)
    where, params = "", []
    if cursor is not None:
        where = "WHERE model_name > ?"
        params.append(str(decode_cursor(cursor)[0]))
    sql = f"SELECT DISTINCT model_name FROM pairs {where} ORDER BY model_name LIMIT ?"
    return sql, [*params, limit + 1], (0,)
