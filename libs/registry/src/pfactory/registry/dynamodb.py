"""``DynamoDBVersionIndex``: the production version index on one DynamoDB table (aioboto3).

Allocation is an atomic ``ADD`` on the pair counter plus an ``attribute_not_exists`` put of the
idempotency item. Every other write is one ``TransactWriteItems``: the version items (conditional
on their ``rev``), the change-log entries, and the change-log head (conditional on its ``seq``),
so the change cursor is gap-free and strongly consistent. See ``dynamodb_items`` for the layout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from pfactory.registry import dynamodb_items as di
from pfactory.registry import model
from pfactory.registry.dynamodb_reads import DynamoDBReads
from pfactory.registry.errors import ConcurrentUpdateError, NotAllocatedError, VersionNotFoundError
from pfactory.registry.index import Allocation
from pfactory.registry.model import ModelVersion, PairKey, VersionStatus

T = TypeVar("T")
_LOST_RACE = {
    "TransactionCanceledException",
    "ConditionalCheckFailedException",
    "TransactionConflictException",
}
_HEAD = {"pk": di.s(di.CHANGES_PK), "sk": di.s(di.CHANGES_HEAD_SK)}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class DynamoDBVersionIndex(DynamoDBReads):
    """Versions in one DynamoDB table with a GSI by status and a GSI by feature set."""

    # ---- lifecycle of the index itself

    async def __aenter__(self) -> DynamoDBVersionIndex:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def create_table(self) -> None:
        """Create the table with its key schema, both GSIs and TTL on ``expires_at`` (no-op if it exists)."""
        ddb = await self._ddb()
        try:
            await ddb.create_table(**di.table_definition(self.table))
        except ClientError as error:
            if _code(error) != "ResourceInUseException":
                raise
            return
        await ddb.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1})
        await ddb.update_time_to_live(
            TableName=self.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )

    async def _retrying(self, attempt: Callable[[], Awaitable[T | None]], what: str) -> T:
        for tries in range(self.settings.max_write_attempts):
            result = await attempt()
            if result is not None:
                return result
            await asyncio.sleep(random.uniform(0, min(0.01 * 2**tries, 0.25)))  # jitter, then re-read
        raise ConcurrentUpdateError(
            f"{what}: lost to concurrent writers {self.settings.max_write_attempts} times"
        )

    async def _transact(
        self, changes: list[tuple[ModelVersion, int | None]], extra: list[dict[str, Any]]
    ) -> bool:
        """Write versions (expected rev, None for new) with fresh change seqs; False if a condition failed."""
        head = await self._get_item(_HEAD)
        current = int(head["seq"]["N"]) if head else 0
        expires = int(time.time()) + self.settings.change_log_ttl_days * 86_400
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {**_HEAD, "seq": di.n(current + len(changes))},
                    "ConditionExpression": "attribute_not_exists(pk) OR seq = :seq",
                    "ExpressionAttributeValues": {":seq": di.n(current)},
                }
            }
        ]
        for offset, (record, rev) in enumerate(changes, start=1):
            put: dict[str, Any] = {
                "TableName": self.table,
                "Item": di.version_item(record, rev=(rev or 0) + 1, seq=current + offset),
            }
            if rev is None:
                put["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                put["ConditionExpression"] = "rev = :rev"
                put["ExpressionAttributeValues"] = {":rev": di.n(rev)}
            entry = {
                "pk": di.s(di.CHANGES_PK),
                "sk": di.s(di.change_sk(current + offset)),
                "pair": di.s(str(record.pair)),
                "version": di.n(record.version),
                "expires_at": di.n(expires),
            }
            items += [{"Put": put}, {"Put": {"TableName": self.table, "Item": entry}}]
        ddb = await self._ddb()
        try:
            await ddb.transact_write_items(TransactItems=[*items, *extra])
        except ClientError as error:
            if _code(error) in _LOST_RACE:
                return False
            raise
        return True

    # ---- VersionIndex: writes

    async def allocate(self, pair: PairKey, idempotency_key: str) -> Allocation:
        """See ``VersionIndex.allocate``; a same-key race burns one number (a gap), never a duplicate."""
        key = di.allocation_key(pair, idempotency_key)
        existing = await self._get_item(key)
        if existing is None:
            ddb = await self._ddb()
            response = await ddb.update_item(
                TableName=self.table,
                Key=di.counter_key(pair),
                UpdateExpression="ADD next_version :one",
                ExpressionAttributeValues={":one": di.n(1)},
                ReturnValues="UPDATED_NEW",
            )
            version = int(response["Attributes"]["next_version"]["N"])
            item = {
                **key,
                "version": di.n(version),
                "state": di.s("pending"),
                "at": di.s(model.utc_now().isoformat()),
            }
            try:
                await ddb.put_item(
                    TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
                return Allocation(pair, version, idempotency_key)
            except ClientError as error:
                if _code(error) != "ConditionalCheckFailedException":
                    raise
            existing = await self._get_item(key)
            assert existing is not None  # the conditional put failed because it exists
        return Allocation(
            pair,
            int(existing["version"]["N"]),
            idempotency_key,
            committed=existing["state"]["S"] == "committed",
        )

    async def commit(self, record: ModelVersion) -> ModelVersion:
        """See ``VersionIndex.commit``."""
        model.check_committable(record)
        pair, key = record.pair, di.allocation_key(record.pair, record.allocation_key)

        async def attempt() -> ModelVersion | None:
            allocation = await self._get_item(key)
            if allocation is None or int(allocation["version"]["N"]) != record.version:
                held = f" (that key holds version {allocation['version']['N']})" if allocation else ""
                raise NotAllocatedError(
                    f"{record.label} was not allocated under key {record.allocation_key!r}{held}"
                )
            if allocation["state"]["S"] == "committed":
                return (await self._read(pair, record.version))[0]
            stored = model.registered(record)
            mark = {
                "Update": {
                    "TableName": self.table,
                    "Key": key,
                    "UpdateExpression": "SET #state = :committed",
                    "ConditionExpression": "#state = :pending",
                    "ExpressionAttributeNames": {"#state": "state"},
                    "ExpressionAttributeValues": {
                        ":committed": di.s("committed"),
                        ":pending": di.s("pending"),
                    },
                }
            }
            catalog = [{"Put": {"TableName": self.table, "Item": item}} for item in di.catalog_items(pair)]
            return stored if await self._transact([(stored, None)], [mark, *catalog]) else None

        return await self._retrying(attempt, record.label)

    # ---- VersionLifecycle: writes

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
        """See ``VersionLifecycle.transition``: a put conditional on the version's ``rev``."""

        async def attempt() -> ModelVersion | None:
            current, rev = await self._read(pair, version)
            changed = model.transition(current, to, actor=actor, reason=reason, override=override)
            return changed if await self._transact([(changed, rev)], []) else None

        return await self._retrying(attempt, f"{pair}/version={version}")

    async def move_alias(self, pair: PairKey, alias: str, version: int, *, actor: str) -> ModelVersion:
        """See ``VersionLifecycle.move_alias``: pointer, new holder and old holder in one transaction."""

        async def attempt() -> ModelVersion | None:
            target, target_rev = await self._read(pair, version)
            pointer = await self._get_item(di.alias_key(pair, alias))
            held_by = int(pointer["version"]["N"]) if pointer else None
            if held_by == version:
                return target
            moved = model.set_alias(target, alias, actor=actor)
            changes: list[tuple[ModelVersion, int | None]] = [(moved, target_rev)]
            if held_by is not None:
                holder, holder_rev = await self._read(pair, held_by)
                reason = f"moved to {version}"
                changes.append((model.remove_alias(holder, alias, actor=actor, reason=reason), holder_rev))
            put_pointer: dict[str, Any] = {
                "TableName": self.table,
                "Item": {**di.alias_key(pair, alias), "version": di.n(version)},
            }
            if held_by is None:
                put_pointer["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                put_pointer["ConditionExpression"] = "version = :held"
                put_pointer["ExpressionAttributeValues"] = {":held": di.n(held_by)}
            return moved if await self._transact(changes, [{"Put": put_pointer}]) else None

        return await self._retrying(attempt, f"{pair} alias {alias!r}")

    async def remove_alias(
        self, pair: PairKey, alias: str, *, actor: str, reason: str | None = None
    ) -> ModelVersion:
        """See ``VersionLifecycle.remove_alias``: pointer delete and holder update in one transaction."""

        async def attempt() -> ModelVersion | None:
            pointer = await self._get_item(di.alias_key(pair, alias))
            if pointer is None:
                raise VersionNotFoundError(f"{pair}: no version holds the alias {alias!r}")
            held_by = int(pointer["version"]["N"])
            holder, rev = await self._read(pair, held_by)
            changed = model.remove_alias(holder, alias, actor=actor, reason=reason)
            delete_pointer = {
                "Delete": {
                    "TableName": self.table,
                    "Key": di.alias_key(pair, alias),
                    "ConditionExpression": "version = :held",
                    "ExpressionAttributeValues": {":held": di.n(held_by)},
                }
            }
            return changed if await self._transact([(changed, rev)], [delete_pointer]) else None

        return await self._retrying(attempt, f"{pair} alias {alias!r}")
