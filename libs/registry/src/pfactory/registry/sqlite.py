"""``SqliteVersionIndex``: the embedded version index (stdlib sqlite3 on its own thread, WAL)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry import model
from pfactory.registry.errors import NotAllocatedError, VersionNotFoundError
from pfactory.registry.index import (
    Allocation,
    ChangeBatch,
    NamePage,
    VersionPage,
    check_limit,
    encode_cursor,
)
from pfactory.registry.model import ModelVersion, PairKey, VersionStatus
from pfactory.registry.sqlite_sql import LIVE_SQL, SCHEMA, list_sql, models_sql, query_sql

T = TypeVar("T")


def _enable_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch to WAL, waiting out a concurrent opener: this pragma does not honour the busy timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteVersionIndex:
    """Versions in one SQLite file. Writes run in ``BEGIN IMMEDIATE`` transactions, so several
    processes may share the file; each instance owns one connection on one worker thread."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pf-sqlite-index")
        self._conn: sqlite3.Connection | None = None

    # ---- plumbing

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
            _enable_wal(conn, self._busy_timeout_s)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
            with self._tx():
                for statement in filter(str.strip, SCHEMA.split(";")):
                    conn.execute(statement)
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn if self._conn is not None else self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(_close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> SqliteVersionIndex:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self._db().execute(sql, params).fetchone()

    @staticmethod
    def _next_seq(conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "UPDATE sequence SET value = value + 1 WHERE name = 'changes' RETURNING value"
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _load(conn: sqlite3.Connection, pair: PairKey, version: int) -> ModelVersion:
        row = conn.execute(
            "SELECT doc FROM versions WHERE pair = ? AND version = ?", (str(pair), version)
        ).fetchone()
        if row is None:
            raise VersionNotFoundError(f"{pair}/version={version} is not registered (or not committed yet)")
        return ModelVersion.model_validate_json(row[0])

    def _save(self, conn: sqlite3.Connection, record: ModelVersion, *, insert: bool = False) -> None:
        seq = self._next_seq(conn)
        doc = record.model_dump_json()
        if insert:
            conn.execute(
                "INSERT INTO versions (pair, version, model_name, fs_name, fs_version, status, seq, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(record.pair),
                    record.version,
                    record.model_name,
                    record.feature_set.name,
                    record.feature_set.version,
                    record.status.value,
                    seq,
                    doc,
                ),
            )
        else:
            conn.execute(
                "UPDATE versions SET status = ?, seq = ?, doc = ? WHERE pair = ? AND version = ?",
                (record.status.value, seq, doc, str(record.pair), record.version),
            )

    # ---- VersionIndex

    async def allocate(self, pair: PairKey, idempotency_key: str) -> Allocation:
        """See ``VersionIndex.allocate``."""
        return await self._run(self._allocate, pair, idempotency_key)

    def _allocate(self, pair: PairKey, key: str) -> Allocation:
        self._db()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT version, state FROM allocations WHERE pair = ? AND idempotency_key = ?",
                (str(pair), key),
            ).fetchone()
            if row is not None:
                return Allocation(pair, int(row[0]), key, committed=row[1] == "committed")
            (version,) = conn.execute(
                "INSERT INTO counters (pair, next_version) VALUES (?, 1) "
                "ON CONFLICT (pair) DO UPDATE SET next_version = next_version + 1 RETURNING next_version",
                (str(pair),),
            ).fetchone()
            conn.execute(
                "INSERT INTO allocations (pair, idempotency_key, version, state, allocated_at) "
                "VALUES (?, ?, ?, 'pending', ?)",
                (str(pair), key, version, model.utc_now().isoformat()),
            )
            return Allocation(pair, int(version), key)

    async def commit(self, record: ModelVersion) -> ModelVersion:
        """See ``VersionIndex.commit``."""
        return await self._run(self._commit, record)

    def _commit(self, record: ModelVersion) -> ModelVersion:
        model.check_committable(record)
        self._db()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT version, state FROM allocations WHERE pair = ? AND idempotency_key = ?",
                (str(record.pair), record.allocation_key),
            ).fetchone()
            if row is None or int(row[0]) != record.version:
                raise NotAllocatedError(
                    f"{record.label} was not allocated under key {record.allocation_key!r}"
                    + (f" (that key holds version {row[0]})" if row else "")
                )
            if row[1] == "committed":
                return self._load(conn, record.pair, record.version)
            stored = model.registered(record)
            self._save(conn, stored, insert=True)
            conn.execute(
                "INSERT OR IGNORE INTO pairs (model_name, pair, fs_name, fs_version) VALUES (?, ?, ?, ?)",
                (record.model_name, str(record.pair), record.feature_set.name, record.feature_set.version),
            )
            conn.execute(
                "UPDATE allocations SET state = 'committed' WHERE pair = ? AND idempotency_key = ?",
                (str(record.pair), record.allocation_key),
            )
            return stored

    async def get(self, pair: PairKey, version: int) -> ModelVersion:
        """See ``VersionIndex.get``."""
        return await self._run(lambda: self._load(self._db(), pair, version))

    async def list_versions(
        self,
        pair: PairKey,
        *,
        status: VersionStatus | None = None,
        newest_first: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> VersionPage:
        """See ``VersionIndex.list_versions``."""
        sql, params, keys = list_sql(pair, status, newest_first, limit, cursor)
        return await self._run(self._page, sql, params, limit, keys)

    async def query(
        self,
        *,
        status: VersionStatus | None = None,
        feature_set: str | FeatureSetRef | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> VersionPage:
        """See ``VersionIndex.query``."""
        sql, params, keys = query_sql(status, feature_set, limit, cursor)
        return await self._run(self._page, sql, params, limit, keys)

    def _page(self, sql: str, params: list[Any], limit: int, key_columns: tuple[int, ...]) -> VersionPage:
        rows = self._db().execute(sql, params).fetchall()
        items = [ModelVersion.model_validate_json(row[0]) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor([rows[limit - 1][i] for i in key_columns]) if more else None
        return VersionPage(items=items, next_cursor=next_cursor)

    async def changes_since(self, cursor: int = 0, *, limit: int = 100) -> ChangeBatch:
        """See ``VersionIndex.changes_since``."""
        check_limit(limit)

        def _read() -> ChangeBatch:
            rows = (
                self._db()
                .execute("SELECT doc, seq FROM versions WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit))
                .fetchall()
            )
            items = [ModelVersion.model_validate_json(row[0]) for row in rows]
            return ChangeBatch(items=items, cursor=int(rows[-1][1]) if rows else cursor)

        return await self._run(_read)

    # ---- VersionLifecycle

    async def transition(
        self,
        pair: PairKey,
        version: int,
        to: VersionStatus,
        *,
        actor: str,
        reason: str | None = None,
        override: bool = False,
    ) -> ModelVersion:
        """See ``VersionLifecycle.transition``."""

        def _transition() -> ModelVersion:
            self._db()
            with self._tx() as conn:
                changed = model.transition(
                    self._load(conn, pair, version), to, actor=actor, reason=reason, override=override
                )
                self._save(conn, changed)
                return changed

        return await self._run(_transition)

    async def move_alias(self, pair: PairKey, alias: str, version: int, *, actor: str) -> ModelVersion:
        """See ``VersionLifecycle.move_alias``."""

        def _move() -> ModelVersion:
            self._db()
            with self._tx() as conn:
                target = self._load(conn, pair, version)
                row = conn.execute(
                    "SELECT version FROM aliases WHERE pair = ? AND alias = ?", (str(pair), alias)
                ).fetchone()
                if row is not None and int(row[0]) == version:
                    return target
                moved = model.set_alias(target, alias, actor=actor)
                if row is not None:
                    holder = self._load(conn, pair, int(row[0]))
                    self._save(
                        conn, model.remove_alias(holder, alias, actor=actor, reason=f"moved to {version}")
                    )
                self._save(conn, moved)
                conn.execute(
                    "INSERT INTO aliases (pair, alias, version) VALUES (?, ?, ?) "
                    "ON CONFLICT (pair, alias) DO UPDATE SET version = excluded.version",
                    (str(pair), alias, version),
                )
                return moved

        return await self._run(_move)

    async def remove_alias(
        self, pair: PairKey, alias: str, *, actor: str, reason: str | None = None
    ) -> ModelVersion:
        """See ``VersionLifecycle.remove_alias``."""

        def _remove() -> ModelVersion:
            self._db()
            with self._tx() as conn:
                row = conn.execute(
                    "SELECT version FROM aliases WHERE pair = ? AND alias = ?", (str(pair), alias)
                ).fetchone()
                if row is None:
                    raise VersionNotFoundError(f"{pair}: no version holds the alias {alias!r}")
                holder = self._load(conn, pair, int(row[0]))
                changed = model.remove_alias(holder, alias, actor=actor, reason=reason)
                self._save(conn, changed)
                conn.execute("DELETE FROM aliases WHERE pair = ? AND alias = ?", (str(pair), alias))
                return changed

        return await self._run(_remove)

    async def get_by_alias(self, pair: PairKey, alias: str) -> ModelVersion:
        """See ``VersionLifecycle.get_by_alias``."""

        def _get() -> ModelVersion:
            row = self._one(
                "SELECT v.doc FROM aliases a JOIN versions v ON v.pair = a.pair AND v.version = a.version "
                "WHERE a.pair = ? AND a.alias = ?",
                (str(pair), alias),
            )
            if row is None:
                raise VersionNotFoundError(f"{pair}: no version holds the alias {alias!r}")
            return ModelVersion.model_validate_json(row[0])

        return await self._run(_get)

    async def get_live(self, pair: PairKey) -> ModelVersion | None:
        """See ``VersionLifecycle.get_live``."""

        def _get() -> ModelVersion | None:
            row = self._one(LIVE_SQL, (str(pair),))
            return None if row is None else ModelVersion.model_validate_json(row[0])

        return await self._run(_get)

    # ---- ModelCatalog

    async def list_models(self, *, limit: int = 50, cursor: str | None = None) -> NamePage:
        """See ``ModelCatalog.list_models``."""
        sql, params, _ = models_sql(limit, cursor)

        def _read() -> NamePage:
            names = [str(row[0]) for row in self._db().execute(sql, params).fetchall()]
            more = len(names) > limit
            return NamePage(names[:limit], encode_cursor([names[limit - 1]]) if more else None)

        return await self._run(_read)

    async def list_pairs(self, model_name: str) -> list[PairKey]:
        """See ``ModelCatalog.list_pairs``."""

        def _read() -> list[PairKey]:
            rows = (
                self._db()
                .execute("SELECT pair FROM pairs WHERE model_name = ? ORDER BY pair", (model_name,))
                .fetchall()
            )
            return [PairKey.parse(row[0]) for row in rows]

        return await self._run(_read)
