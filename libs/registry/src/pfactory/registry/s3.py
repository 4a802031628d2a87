"""``S3ArtifactStore``: the artifact store on S3 (aioboto3), same key layout as the local folder."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aioboto3  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from pfactory.registry.artifacts import CHUNK_SIZE, StoredObject, check_key, sha256_file
from pfactory.registry.errors import ArtifactNotFoundError
from pfactory.registry.settings import S3ArtifactStoreSettings

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3ArtifactStore:
    """Artifacts as S3 objects under ``s3://<bucket>/<prefix><key>``; sha256 kept as object metadata."""

    def __init__(self, settings: S3ArtifactStoreSettings, *, session: Any | None = None) -> None:
        self.settings = settings
        self._session = session or aioboto3.Session()
        self._stack = AsyncExitStack()
        self._client: Any | None = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await self._stack.enter_async_context(
                    self._session.client(
                        "s3", region_name=self.settings.region, endpoint_url=self.settings.endpoint_url
                    )
                )
        return self._client

    async def close(self) -> None:
        """Close the S3 client."""
        async with self._lock:
            await self._stack.aclose()
            self._client = None

    async def __aenter__(self) -> S3ArtifactStore:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def create_bucket(self) -> None:
        """Create the bucket if it does not exist (tests and the embedded stack)."""
        s3 = await self._s3()
        try:
            await s3.head_bucket(Bucket=self.settings.bucket)
        except ClientError:
            config = (
                {"LocationConstraint": self.settings.region} if self.settings.region != "us-east-1" else {}
            )
            await s3.create_bucket(
                Bucket=self.settings.bucket, **({"CreateBucketConfiguration": config} if config else {})
            )

    def _key(self, key: str) -> str:
        return self.settings.prefix + check_key(key)

    def uri(self, key: str) -> str:
        """Return ``s3://bucket/prefix+key``."""
        return f"s3://{self.settings.bucket}/{self._key(key)}"

    async def put(self, key: str, data: bytes | Path) -> StoredObject:
        """Upload; S3 replaces an object atomically. Big files go up in parts from disk."""
        s3 = await self._s3()
        full = self._key(key)
        if isinstance(data, Path):
            sha256, size = await asyncio.to_thread(sha256_file, data)
            config = TransferConfig(multipart_threshold=self.settings.multipart_threshold_bytes)
            await s3.upload_file(
                str(data),
                self.settings.bucket,
                full,
                ExtraArgs={"Metadata": {"sha256": sha256}},
                Config=config,
            )
        else:
            sha256, size = hashlib.sha256(data).hexdigest(), len(data)
            await s3.put_object(Bucket=self.settings.bucket, Key=full, Body=data, Metadata={"sha256": sha256})
        return StoredObject(key=key, uri=self.uri(key), sha256=sha256, size_bytes=size)

    async def _get(self, key: str) -> Any:
        s3 = await self._s3()
        try:
            return await s3.get_object(Bucket=self.settings.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                raise ArtifactNotFoundError(f"no artifact under {key!r} ({self.uri(key)})") from None
            raise

    async def open(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Stream the object's body in chunks."""
        body = (await self._get(key))["Body"]
        try:
            async for chunk in body.iter_chunks(chunk_size):
                yield chunk
        finally:
            body.close()

    async def read(self, key: str) -> bytes:
        """Return the object's body."""
        body = (await self._get(key))["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return data

    async def exists(self, key: str) -> bool:
        """True if the object exists (HEAD)."""
        s3 = await self._s3()
        try:
            await s3.head_object(Bucket=self.settings.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        """Delete the object (S3 does not mind a missing key)."""
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.settings.bucket, Key=self._key(key))
