"""Client plumbing and the reads of ``DynamoDBVersionIndex`` (queries on the table and its GSIs)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import aioboto3  # type: ignore[import-untyped]

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry import dynamodb_items as di
from pfactory.registry.errors import VersionNotFoundError
from pfactory.registry.index import (
    ChangeBatch,
    NamePage,
    VersionPage,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from pfactory.registry.model import ModelVersion, PairKey, VersionStatus
from pfactory.registry.settings import DynamoDBVersionIndexSettings

_BASE_KEYS = ("pk", "sk")
_STATUS_KEYS = ("pk", "sk", "gsi1pk", "gsi1sk")
_FS_KEYS = ("pk", "sk", "gsi2pk", "gsi2sk")


class DynamoDBReads:
    """The client and every read; version reads by key are strongly consistent, GSI reads eventually."""

    def __init__(self, settings: DynamoDBVersionIndexSettings, *, session: Any | None = None) -> None:
        self.settings = settings
        self.table = settings.table_name
        self._session = session or aioboto3.Session()
        self._stack = AsyncExitStack()
        self._client: Any | None = None
        self._lock = asyncio.Lock()

    async def _ddb(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await self._stack.enter_async_context(
                    self._session.client(
                        "dynamodb", region_name=self.settings.region, endpoint_url=self.settings.endpoint_url
                    )
                )
        return self._client

    async def close(self) -> None:
        """Close the DynamoDB client."""
        async with self._lock:
            await self._stack.aclose()
            self._client = None

    async def _get_item(self, key: di.Item) -> di.Item | None:
        ddb = await self._ddb()
        response = await ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        item: di.Item | None = response.get("Item")
        return item

    async def _read(self, pair: PairKey, version: int) -> tuple[ModelVersion, int]:
        item = await self._get_item(di.version_key(pair, version))
        if item is None:
            raise VersionNotFoundError(f"{pair}/version={version} is not registered (or not committed yet)")
        return di.record_of(item), int(item["rev"]["N"])

    async def _page(
        self, params: dict[str, Any], limit: int, cursor: str | None, key_attrs: tuple[str, ...]
    ) -> VersionPage:
        """Query until ``limit + 1`` items or the end; a filter may need several round trips."""
        check_limit(limit)
        if cursor is not None:
            params["ExclusiveStartKey"] = {
                name: di.s(value) for name, value in decode_cursor(cursor)[0].items()
            }
        ddb = await self._ddb()
        found: list[di.Item] = []
        while True:
            response = await ddb.query(TableName=self.table, Limit=limit + 1 - len(found), **params)
            found.extend(response.get("Items", []))
            if len(found) > limit or "LastEvaluatedKey" not in response:
                break
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        page = found[:limit]
        next_cursor = None
        if len(found) > limit:
            next_cursor = encode_cursor([{name: page[-1][name]["S"] for name in key_attrs}])
        return VersionPage(items=[di.record_of(item) for item in page], next_cursor=next_cursor)

    # ---- VersionIndex: reads

    async def get(self, pair: PairKey, version: int) -> ModelVersion:
        """See ``VersionIndex.get``."""
        return (await self._read(pair, version))[0]

    async def list_versions(
        self,
        pair: PairKey,
        *,
        status: VersionStatus | None = None,
        newest_first: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> VersionPage:
        """See ``VersionIndex.list_versions``; with a status it reads the ``by_status`` GSI."""
        params: dict[str, Any] = {"ScanIndexForward": not newest_first}
        if status is None:
            params["KeyConditionExpression"] = "pk = :pk AND begins_with(sk, :prefix)"
            params["ExpressionAttributeValues"] = {
                ":pk": di.s(di.pair_pk(pair)),
                ":prefix": di.s(di.VERSION_SK_PREFIX),
            }
            params["ConsistentRead"] = True
            return await self._page(params, limit, cursor, _BASE_KEYS)
        params["IndexName"] = di.STATUS_INDEX
        params["KeyConditionExpression"] = "gsi1pk = :status AND begins_with(gsi1sk, :pair)"
        params["ExpressionAttributeValues"] = {
            ":status": di.s(f"STATUS#{status.value}"),
            ":pair": di.s(di.status_sk(pair)),
        }
        return await self._page(params, limit, cursor, _STATUS_KEYS)

    async def query(
        self,
        *,
        status: VersionStatus | None = None,
        feature_set: str | FeatureSetRef | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> VersionPage:
        """See ``VersionIndex.query``; reads the ``by_feature_set`` or the ``by_status`` GSI."""
        if feature_set is None:
            if status is None:
                raise ValueError("query needs a status, a feature set or both")
            params: dict[str, Any] = {
                "IndexName": di.STATUS_INDEX,
                "KeyConditionExpression": "gsi1pk = :status",
                "ExpressionAttributeValues": {":status": di.s(f"STATUS#{status.value}")},
            }
            return await self._page(params, limit, cursor, _STATUS_KEYS)
        name = feature_set if isinstance(feature_set, str) else feature_set.name
        values: dict[str, Any] = {":fs": di.s(f"FS#{name}")}
        condition = "gsi2pk = :fs"
        if isinstance(feature_set, FeatureSetRef):
            condition += " AND begins_with(gsi2sk, :fsv)"
            values[":fsv"] = di.s(f"{feature_set.version}#")
        params = {"IndexName": di.FEATURE_SET_INDEX, "KeyConditionExpression": condition}
        if status is not None:
            params["FilterExpression"] = "#status = :status"
            params["ExpressionAttributeNames"] = {"#status": "status"}
            values[":status"] = di.s(status.value)
        params["ExpressionAttributeValues"] = values
        return await self._page(params, limit, cursor, _FS_KEYS)

    async def changes_since(self, cursor: int = 0, *, limit: int = 100) -> ChangeBatch:
        """See ``VersionIndex.changes_since``: reads the change log, then the versions it names."""
        check_limit(limit)
        ddb = await self._ddb()
        response = await ddb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND sk > :after",
            ExpressionAttributeValues={":pk": di.s(di.CHANGES_PK), ":after": di.s(di.change_sk(cursor))},
            ConsistentRead=True,
            Limit=limit,
        )
        entries = response.get("Items", [])
        if not entries:
            return ChangeBatch(items=[], cursor=cursor)
        order: dict[tuple[str, int], None] = {}
        for entry in entries:  # a version changed twice is reported once, at its last change
            key = (entry["pair"]["S"], int(entry["version"]["N"]))
            order.pop(key, None)
            order[key] = None
        records: dict[tuple[str, int], ModelVersion] = {}
        keys = list(order)
        for start in range(0, len(keys), 100):
            for record in await self._batch_get(keys[start : start + 100]):
                records[(str(record.pair), record.version)] = record
        return ChangeBatch(
            items=[records[key] for key in keys if key in records], cursor=int(entries[-1]["sk"]["S"])
        )

    async def _batch_get(self, keys: list[tuple[str, int]]) -> list[ModelVersion]:
        ddb = await self._ddb()
        request: dict[str, Any] = {
            self.table: {
                "Keys": [di.version_key(PairKey.parse(pair), version) for pair, version in keys],
                "ConsistentRead": True,
            }
        }
        records: list[ModelVersion] = []
        while request:
            response = await ddb.batch_get_item(RequestItems=request)
            records.extend(di.record_of(item) for item in response.get("Responses", {}).get(self.table, []))
            request = response.get("UnprocessedKeys") or {}
        return records

    # ---- VersionLifecycle: reads

    async def get_by_alias(self, pair: PairKey, alias: str) -> ModelVersion:
        """See ``VersionLifecycle.get_by_alias``."""
        pointer = await self._get_item(di.alias_key(pair, alias))
        if pointer is None:
            raise VersionNotFoundError(f"{pair}: no version holds the alias {alias!r}")
        return (await self._read(pair, int(pointer["version"]["N"])))[0]

    async def get_live(self, pair: PairKey) -> ModelVersion | None:
        """See ``VersionLifecycle.get_live``: the newest live version from the ``by_status`` GSI."""
        ddb = await self._ddb()
        response = await ddb.query(
            TableName=self.table,
            IndexName=di.STATUS_INDEX,
            KeyConditionExpression="gsi1pk = :status AND begins_with(gsi1sk, :pair)",
            ExpressionAttributeValues={":status": di.s("STATUS#live"), ":pair": di.s(di.status_sk(pair))},
            ScanIndexForward=False,
            Limit=1,
        )
        items = response.get("Items", [])
        return di.record_of(items[0]) if items else None

    # ---- ModelCatalog

    async def list_models(self, *, limit: int = 50, cursor: str | None = None) -> NamePage:
        """See ``ModelCatalog.list_models``: one query of the ``#MODELS`` partition."""
        check_limit(limit)
        values: dict[str, Any] = {":pk": di.s(di.MODELS_PK)}
        condition = "pk = :pk"
        if cursor is not None:
            condition += " AND sk > :after"
            values[":after"] = di.s(str(decode_cursor(cursor)[0]))
        ddb = await self._ddb()
        names: list[str] = []
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        while True:
            response = await ddb.query(Limit=limit + 1 - len(names), **params)
            names.extend(item["sk"]["S"] for item in response.get("Items", []))
            if len(names) > limit or "LastEvaluatedKey" not in response:
                break
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        more = len(names) > limit
        return NamePage(names[:limit], encode_cursor([names[limit - 1]]) if more else None)

    async def list_pairs(self, model_name: str) -> list[PairKey]:
        """See ``ModelCatalog.list_pairs``: one query of the model's catalog partition."""
        ddb = await self._ddb()
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {
                ":pk": di.s(di.model_pk(model_name)),
                ":prefix": di.s(di.PAIR_SK_PREFIX),
            },
            "ConsistentRead": True,
        }
        pairs: list[PairKey] = []
        while True:
            response = await ddb.query(**params)
            pairs.extend(PairKey.parse(item["pair"]["S"]) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return pairs
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]
