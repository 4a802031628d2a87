"""One contract suite for ``VersionIndex`` + ``VersionLifecycle``, run on SQLite and DynamoDB (moto_server)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

import pytest

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry import sqlite_sql
from pfactory.registry.dynamodb import DynamoDBVersionIndex
from pfactory.registry.errors import (
    GateFailedError,
    IllegalTransitionError,
    NotAllocatedError,
    VersionNotFoundError,
)
from pfactory.registry.index import ModelCatalog, VersionIndex, VersionLifecycle
from pfactory.registry.model import ModelVersion, PairKey, VersionStatus
from pfactory.registry.settings import DynamoDBVersionIndexSettings
from pfactory.registry.sqlite import SqliteVersionIndex
from tests.registry.factories import OTHER_PAIR, PAIR, make_version


class Index(VersionIndex, VersionLifecycle, Protocol):
    """Both roles, as every backend implements them."""


async def register(index: Index, pair: PairKey, key: str, **overrides: Any) -> ModelVersion:
    allocation = await index.allocate(pair, key)
    return await index.commit(make_version(pair, allocation.version, key, **overrides))


async def make_live(index: Index, pair: PairKey, version: int) -> ModelVersion:
    await index.transition(pair, version, VersionStatus.APPROVED, actor="alice")
    return await index.transition(pair, version, VersionStatus.LIVE, actor="scheduler")


async def all_pages(index: Index, **query: Any) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = await index.list_versions(PAIR, cursor=cursor, **query)
        pages.append([record.version for record in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


class VersionIndexContract:
    """Behaviour every version index must show; subclasses provide the ``index`` fixture."""

    # ---- allocation

    async def test_allocation_is_idempotent_by_key(self, index: Index) -> None:
        first = await index.allocate(PAIR, "job-a")
        again = await index.allocate(PAIR, "job-a")
        other = await index.allocate(PAIR, "job-b")
        assert (first.version, again.version, other.version) == (1, 1, 2)
        assert not again.committed
        await index.commit(make_version(PAIR, 1, "job-a"))
        assert (await index.allocate(PAIR, "job-a")).committed
        assert (await index.allocate(OTHER_PAIR, "job-a")).version == 1  # numbering is per pair

    async def test_concurrent_allocations_never_collide(self, index: Index) -> None:
        allocations = await asyncio.gather(*(index.allocate(PAIR, f"job-{i}") for i in range(20)))
        assert sorted(a.version for a in allocations) == list(range(1, 21))
        repeats = await asyncio.gather(*(index.allocate(PAIR, f"job-{i}") for i in range(20)))
        assert [a.version for a in repeats] == [a.version for a in allocations]

    async def test_pending_versions_are_invisible_until_commit(self, index: Index) -> None:
        allocation = await index.allocate(PAIR, "job-a")
        with pytest.raises(VersionNotFoundError, match="version=1"):
            await index.get(PAIR, allocation.version)
        assert (await index.list_versions(PAIR)).items == []
        assert (await index.query(feature_set="credit_features")).items == []
        assert (await index.changes_since(0)).items == []
        committed = await index.commit(make_version(PAIR, allocation.version, "job-a"))
        assert await index.get(PAIR, 1) == committed
        assert committed.audit[0].action == "registered"

    async def test_commit_is_idempotent_and_checks_the_allocation(self, index: Index) -> None:
        await index.allocate(PAIR, "job-a")
        first = await index.commit(make_version(PAIR, 1, "job-a"))
        again = await index.commit(make_version(PAIR, 1, "job-a", created_by="someone-else"))
        assert again == first
        with pytest.raises(NotAllocatedError, match="job-z"):
            await index.commit(make_version(PAIR, 1, "job-z"))
        with pytest.raises(NotAllocatedError, match="holds version 1"):
            await index.commit(make_version(PAIR, 2, "job-a"))
        with pytest.raises(IllegalTransitionError, match="committed as candidate"):
            await index.commit(make_version(PAIR, 1, "job-a", status=VersionStatus.LIVE))

    # ---- lifecycle

    async def test_transitions_are_stored_with_their_audit_trail(self, index: Index) -> None:
        await register(index, PAIR, "job-a")
        live = await make_live(index, PAIR, 1)
        stored = await index.get(PAIR, 1)
        assert stored == live and stored.status is VersionStatus.LIVE
        assert [(e.action, e.from_, e.to) for e in stored.audit] == [
            ("registered", None, "candidate"),
            ("transition", "candidate", "approved"),
            ("transition", "approved", "live"),
        ]
        with pytest.raises(IllegalTransitionError, match="cannot move from live to approved"):
            await index.transition(PAIR, 1, VersionStatus.APPROVED, actor="alice")
        assert (await index.get(PAIR, 1)).status is VersionStatus.LIVE
        with pytest.raises(VersionNotFoundError):
            await index.transition(PAIR, 9, VersionStatus.APPROVED, actor="alice")

    async def test_failed_gates_need_an_override_with_a_reason(self, index: Index) -> None:
        await register(index, PAIR, "job-a", gates={"fairness": False})
        with pytest.raises(GateFailedError, match="fairness"):
            await index.transition(PAIR, 1, VersionStatus.APPROVED, actor="alice")
        await index.transition(
            PAIR, 1, VersionStatus.APPROVED, actor="admin", override=True, reason="accepted by risk"
        )
        entry = (await index.get(PAIR, 1)).audit[-1]
        assert (entry.action, entry.actor, entry.reason) == ("override", "admin", "accepted by risk")

    async def test_an_alias_moves_and_is_held_by_one_version(self, index: Index) -> None:
        for key in ("job-a", "job-b"):
            await register(index, PAIR, key)
        with pytest.raises(VersionNotFoundError, match="champion"):
            await index.get_by_alias(PAIR, "champion")
        await index.move_alias(PAIR, "champion", 1, actor="alice")
        assert (await index.get_by_alias(PAIR, "champion")).version == 1
        await index.move_alias(PAIR, "champion", 2, actor="bob")
        await index.move_alias(PAIR, "challenger", 1, actor="bob")
        assert (await index.get_by_alias(PAIR, "champion")).version == 2
        assert (await index.get(PAIR, 1)).aliases == {"challenger"}
        assert (await index.get(PAIR, 2)).aliases == {"champion"}
        assert (await index.get(PAIR, 1)).audit[-2].action == "alias_removed"
        await index.transition(PAIR, 1, VersionStatus.REJECTED, actor="alice")
        with pytest.raises(IllegalTransitionError, match="rejected"):
            await index.move_alias(PAIR, "champion", 1, actor="alice")

    async def test_get_live_returns_the_newest_live_version(self, index: Index) -> None:
        for key in ("job-a", "job-b", "job-c"):
            await register(index, PAIR, key)
        assert await index.get_live(PAIR) is None
        await make_live(index, PAIR, 1)
        assert (await index.get_live(PAIR)).version == 1  # type: ignore[union-attr]
        await make_live(index, PAIR, 2)
        await index.transition(PAIR, 1, VersionStatus.ARCHIVED, actor="scheduler")
        assert (await index.get_live(PAIR)).version == 2  # type: ignore[union-attr]
        assert await index.get_live(OTHER_PAIR) is None

    # ---- listing and queries

    async def test_list_by_pair_pages_by_version(self, index: Index) -> None:
        for i in range(7):
            await register(index, PAIR, f"job-{i}")
        await register(index, OTHER_PAIR, "job-x")
        assert await all_pages(index, limit=3) == [[7, 6, 5], [4, 3, 2], [1]]
        assert await all_pages(index, limit=3, newest_first=False) == [[1, 2, 3], [4, 5, 6], [7]]
        assert await all_pages(index, limit=7) == [[7, 6, 5, 4, 3, 2, 1]]
        for version in (2, 4, 5):
            await index.transition(PAIR, version, VersionStatus.APPROVED, actor="alice")
        assert await all_pages(index, limit=2, status=VersionStatus.APPROVED) == [[5, 4], [2]]
        assert await all_pages(index, status=VersionStatus.LIVE) == [[]]

    async def test_query_by_status_and_by_feature_set(self, index: Index) -> None:
        other_fs = PairKey.of("credit_default", "bureau_features", "1")
        for pair in (PAIR, OTHER_PAIR, other_fs):
            for i in range(2):
                await register(index, pair, f"job-{i}")
        await index.transition(OTHER_PAIR, 2, VersionStatus.REJECTED, actor="alice")

        async def everything(**query: Any) -> list[tuple[str, int]]:
            found, cursor = [], None
            while True:
                page = await index.query(limit=2, cursor=cursor, **query)
                found += [(str(r.pair), r.version) for r in page.items]
                if page.next_cursor is None:
                    return found
                cursor = page.next_cursor

        assert await everything(status=VersionStatus.REJECTED) == [(str(OTHER_PAIR), 2)]
        candidates = await everything(status=VersionStatus.CANDIDATE)
        assert len(candidates) == 5 and len(set(candidates)) == 5
        on_credit = await everything(feature_set="credit_features")
        assert on_credit == [(str(PAIR), 1), (str(PAIR), 2), (str(OTHER_PAIR), 1), (str(OTHER_PAIR), 2)]
        assert await everything(feature_set=FeatureSetRef(name="credit_features", version="4")) == [
            (str(OTHER_PAIR), 1),
            (str(OTHER_PAIR), 2),
        ]
        both = await everything(feature_set="credit_features", status=VersionStatus.CANDIDATE)
        assert both == [(str(PAIR), 1), (str(PAIR), 2), (str(OTHER_PAIR), 1)]
        with pytest.raises(ValueError, match="status, a feature set"):
            await index.query()

    async def test_changes_since_returns_only_what_changed(self, index: Index) -> None:
        start = await index.changes_since(0)
        assert (start.items, start.cursor) == ([], 0)
        for key in ("job-a", "job-b"):
            await register(index, PAIR, key)
        first = await index.changes_since(0)
        assert [r.version for r in first.items] == [1, 2]
        assert (await index.changes_since(first.cursor)).items == []
        await index.transition(PAIR, 1, VersionStatus.APPROVED, actor="alice")
        second = await index.changes_since(first.cursor)
        assert [(r.version, r.status) for r in second.items] == [(1, VersionStatus.APPROVED)]
        assert second.cursor > first.cursor
        await index.move_alias(PAIR, "champion", 2, actor="alice")
        third = await index.changes_since(second.cursor, limit=10)
        assert [(r.version, r.aliases) for r in third.items] == [(2, frozenset({"champion"}))]
        paged = await index.changes_since(0, limit=1)
        assert len(paged.items) == 1 and paged.cursor >= 1

    # ---- alias removal and the model catalog

    async def test_remove_alias_takes_it_from_its_holder_with_an_audit_entry(self, index: Index) -> None:
        await register(index, PAIR, "job-a")
        with pytest.raises(VersionNotFoundError, match="champion"):
            await index.remove_alias(PAIR, "champion", actor="alice")
        await index.move_alias(PAIR, "champion", 1, actor="alice")
        removed = await index.remove_alias(PAIR, "champion", actor="bob", reason="retired")
        assert removed.aliases == frozenset() and await index.get(PAIR, 1) == removed
        entry = removed.audit[-1]
        assert (entry.action, entry.actor, entry.from_, entry.reason) == (
            "alias_removed",
            "bob",
            "champion",
            "retired",
        )
        with pytest.raises(VersionNotFoundError, match="champion"):
            await index.get_by_alias(PAIR, "champion")
        await index.move_alias(PAIR, "champion", 1, actor="alice")  # the alias can be given again
        assert (await index.get_by_alias(PAIR, "champion")).version == 1

    async def test_catalog_lists_models_and_pairs_with_committed_versions(self, index: Index) -> None:
        assert isinstance(index, ModelCatalog)
        assert (await index.list_models()).items == []
        await index.allocate(PairKey.of("pending_only", "credit_features", "3"), "job-p")  # never committed
        other_fs = PairKey.of("credit_default", "bureau_features", "1")
        for pair in (PAIR, OTHER_PAIR, other_fs):
            await register(index, pair, "job-a")
        await register(index, PAIR, "job-b")
        names, cursor = [], None
        while True:
            page = await index.list_models(limit=1, cursor=cursor)
            names.append(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert names == [["credit_default"], ["credit_limit"]]
        assert (await index.list_models(limit=5)).items == ["credit_default", "credit_limit"]
        assert await index.list_pairs("credit_default") == [other_fs, PAIR]
        assert await index.list_pairs("credit_limit") == [OTHER_PAIR]
        assert await index.list_pairs("pending_only") == []


class TestSqliteVersionIndex(VersionIndexContract):
    @pytest.fixture
    async def index(self, tmp_path: Path) -> AsyncIterator[SqliteVersionIndex]:
        async with SqliteVersionIndex(tmp_path / "registry.db") as index:
            yield index

    def test_two_threads_with_their_own_connections_never_collide(self, tmp_path: Path) -> None:
        path = tmp_path / "shared.db"
        results: dict[str, list[int]] = {}

        async def allocate(name: str) -> None:
            async with SqliteVersionIndex(path) as index:
                results[name] = [(await index.allocate(PAIR, f"{name}-{i}")).version for i in range(25)]

        threads = [threading.Thread(target=asyncio.run, args=(allocate(f"t{n}"),)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(results["t0"] + results["t1"]) == list(range(1, 51))

    def test_two_processes_never_collide(self, tmp_path: Path) -> None:
        path = str(tmp_path / "shared.db")
        worker = [sys.executable, "-m", "tests.registry.allocate_worker", path]
        processes = [
            subprocess.Popen([*worker, f"p{n}", "25"], stdout=subprocess.PIPE, text=True) for n in range(2)
        ]
        versions = [json.loads(process.communicate(timeout=120)[0]) for process in processes]
        assert all(process.returncode == 0 for process in processes)
        assert sorted(versions[0] + versions[1]) == list(range(1, 51))

    async def test_reads_use_the_indexes(self, index: SqliteVersionIndex) -> None:
        await register(index, PAIR, "job-a")
        list_live, list_live_params, _ = sqlite_sql.list_sql(PAIR, VersionStatus.LIVE, True, 50, None)
        plans = {  # the SQL the index runs, and the index that must serve it
            "live": (sqlite_sql.LIVE_SQL, (str(PAIR),), "versions_by_pair_status (pair=? AND status=?)"),
            "list": (
                "SELECT doc FROM versions WHERE pair = ? ORDER BY version DESC LIMIT 51",
                (str(PAIR),),
                "PRIMARY KEY (pair=?)",
            ),
            "list-live": (
                list_live,
                tuple(list_live_params),
                "versions_by_pair_status (pair=? AND status=?)",
            ),
            "changes": (
                "SELECT doc, seq FROM versions WHERE seq > ? ORDER BY seq LIMIT 100",
                (0,),
                "versions_by_seq",
            ),
        }
        with closing(sqlite3.connect(index.path)) as conn:
            for name, (sql, params, expected) in plans.items():
                rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)
                plan = " ".join(str(row[-1]) for row in rows)
                assert plan.startswith("SEARCH versions USING"), (name, plan)
                assert expected in plan, (name, plan)
                assert "TEMP B-TREE" not in plan, (name, plan)


@pytest.mark.integration
class TestDynamoDBVersionIndex(VersionIndexContract):
    @pytest.fixture
    async def index(self, moto: str) -> AsyncIterator[DynamoDBVersionIndex]:
        settings = DynamoDBVersionIndexSettings(table_name="pf-registry-test", endpoint_url=moto)
        async with DynamoDBVersionIndex(settings) as index:
            await index.create_table()
            yield index

    async def test_create_table_is_idempotent_and_declares_both_gsis(
        self, index: DynamoDBVersionIndex
    ) -> None:
        await index.create_table()
        ddb = await index._ddb()
        table = (await ddb.describe_table(TableName="pf-registry-test"))["Table"]
        assert {gsi["IndexName"] for gsi in table["GlobalSecondaryIndexes"]} == {
            "by_status",
            "by_feature_set",
        }
        assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
