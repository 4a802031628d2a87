"""``DagWriter``: where generated DAG files go. ``LocalDagWriter`` (a folder) and ``S3DagWriter`` (a bucket).

Airflow's DAG processor must never see half a file: the local writer writes a hidden temporary file in
the same folder and renames it over the target (one atomic step); an S3 PUT replaces an object whole.
An unchanged file is left alone, so Airflow does not re-parse it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any, Protocol

import aioboto3  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

# Stricter than Airflow's dag id: a leading letter or digit, so a DAG file is never a hidden file.
DAG_FILE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,249}$")
_MISSING = {"404", "NoSuchKey", "NotFound"}


class DagWriteError(Exception):
    """A DAG file could not be written, removed or listed; the message says where and why."""


class DagWriter(Protocol):
    """Puts generated DAG files where Airflow's DAG processor reads them."""

    async def write(self, dag_id: str, source: str) -> str:
        """Write (or replace) the DAG file ``<dag_id>.py`` atomically.

        Args:
            dag_id: the DAG's id (letters, digits, ``_``, ``.``, ``-``; first a letter or digit).
            source: the file's Python source.

        Returns:
            Where the file now is (a path or ``s3://`` URI).
        """
        ...

    async def remove(self, dag_id: str) -> bool:
        """Delete ``<dag_id>.py``.

        Returns:
            True if there was a file to delete.
        """
        ...

    async def list_ids(self) -> list[str]:
        """Return the ids of the DAG files present, sorted."""
        ...

    async def close(self) -> None:
        """Release connections (nothing to do for a folder)."""
        ...


def check_dag_file_id(dag_id: str) -> str:
    """Return ``dag_id`` if it can name a DAG file, else raise ``ValueError`` saying why."""
    if not isinstance(dag_id, str) or not DAG_FILE_ID.match(dag_id):
        raise ValueError(
            f"dag id {dag_id!r} cannot name a DAG file: use 1-250 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return dag_id


class LocalDagWriter:
    """DAG files in a folder (Airflow's ``dags_folder`` or a bundle's), written by rename."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path_of(self, dag_id: str) -> Path:
        """Where ``dag_id``'s file lives."""
        return self.folder / f"{check_dag_file_id(dag_id)}.py"

    async def write(self, dag_id: str, source: str) -> str:
        """Write ``<folder>/<dag_id>.py`` through a temporary file and ``os.replace``."""
        target = self.path_of(dag_id)
        return await asyncio.to_thread(self._write, target, source.encode("utf-8"))

    def _write(self, target: Path, data: bytes) -> str:
        try:
            if target.is_file() and target.read_bytes() == data:
                return str(target)
            self.folder.mkdir(parents=True, exist_ok=True)
            # Hidden and not ending in ".py": Airflow's DAG discovery only picks up "*.py" files.
            temporary = self.folder / f".{target.name}.{secrets.token_hex(6)}.tmp"
            try:
                descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, target)
            finally:
                with suppress(FileNotFoundError):
                    temporary.unlink()
            _fsync_folder(self.folder)
        except OSError as error:
            raise DagWriteError(
                f"could not write the DAG file {target}: {error}; check the folder exists on a local "
                "disk and the scheduler may write to it"
            ) from error
        return str(target)

    async def remove(self, dag_id: str) -> bool:
        """Delete ``<folder>/<dag_id>.py``; False when there was none."""
        target = self.path_of(dag_id)

        def unlink() -> bool:
            try:
                target.unlink()
            except FileNotFoundError:
                return False
            except OSError as error:
                raise DagWriteError(f"could not remove the DAG file {target}: {error}") from error
            _fsync_folder(self.folder)
            return True

        return await asyncio.to_thread(unlink)

    async def list_ids(self) -> list[str]:
        """The ids of the ``*.py`` files in the folder (a missing folder holds none)."""

        def scan() -> list[str]:
            if not self.folder.is_dir():
                return []
            return sorted(
                path.stem
                for path in self.folder.iterdir()
                if path.suffix == ".py" and DAG_FILE_ID.match(path.stem) and path.is_file()
            )

        return await asyncio.to_thread(scan)

    async def close(self) -> None:
        """Nothing to release."""


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the folder)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class S3DagWriter:
    """DAG files as objects ``s3://<bucket>/<prefix><dag_id>.py`` (for an S3 DAG bundle or a synced folder)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        session: Any | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3DagWriter needs a bucket name")
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"prefix {prefix!r} must end with '/' (e.g. 'dags/'), or be empty")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self._session = session or aioboto3.Session()
        self._stack = AsyncExitStack()
        self._client: Any | None = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await self._stack.enter_async_context(
                    self._session.client("s3", region_name=self.region, endpoint_url=self.endpoint_url)
                )
        return self._client

    async def close(self) -> None:
        """Close the S3 client."""
        async with self._lock:
            await self._stack.aclose()
            self._client = None

    async def __aenter__(self) -> S3DagWriter:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def key_of(self, dag_id: str) -> str:
        """The object key of ``dag_id``'s file."""
        return f"{self.prefix}{check_dag_file_id(dag_id)}.py"

    def uri_of(self, dag_id: str) -> str:
        """``s3://bucket/prefix<dag_id>.py``."""
        return f"s3://{self.bucket}/{self.key_of(dag_id)}"

    async def create_bucket(self) -> None:
        """Create the bucket if it does not exist (tests and the embedded stack)."""
        s3 = await self._s3()
        try:
            await s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            region = self.region or s3.meta.region_name
            config = {"LocationConstraint": region} if region and region != "us-east-1" else {}
            await s3.create_bucket(
                Bucket=self.bucket, **({"CreateBucketConfiguration": config} if config else {})
            )

    async def write(self, dag_id: str, source: str) -> str:
        """PUT the file (S3 replaces an object whole); an identical object is left alone."""
        key, data = self.key_of(dag_id), source.encode("utf-8")
        sha256 = hashlib.sha256(data).hexdigest()
        s3 = await self._s3()
        try:
            held = await self._head(s3, key)
            if held is None or held.get("Metadata", {}).get("sha256") != sha256:
                await s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType="text/x-python; charset=utf-8",
                    Metadata={"sha256": sha256},
                )
        except (ClientError, BotoCoreError) as error:
            raise DagWriteError(f"could not write {self.uri_of(dag_id)}: {_reason(error)}") from error
        return self.uri_of(dag_id)

    async def remove(self, dag_id: str) -> bool:
        """Delete the object; False when there was none (S3's DELETE does not say, so HEAD first)."""
        key = self.key_of(dag_id)
        s3 = await self._s3()
        try:
            if await self._head(s3, key) is None:
                return False
            await s3.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            raise DagWriteError(f"could not remove {self.uri_of(dag_id)}: {_reason(error)}") from error
        return True

    async def list_ids(self) -> list[str]:
        """The ids of the ``*.py`` objects directly under the prefix."""
        s3 = await self._s3()
        ids: list[str] = []
        try:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :]
                    if name.endswith(".py") and DAG_FILE_ID.match(name[:-3]):
                        ids.append(name[:-3])
        except (ClientError, BotoCoreError) as error:
            raise DagWriteError(
                f"could not list s3://{self.bucket}/{self.prefix}: {_reason(error)}"
            ) from error
        return sorted(ids)

    async def _head(self, s3: Any, key: str) -> dict[str, Any] | None:
        try:
            held: dict[str, Any] = await s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        return held


def _reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code", "?")
        hint = (
            " (create the bucket, or fix the scheduler's DAG bucket setting)"
            if code in ("NoSuchBucket", "404")
            else ""
        )
        return f"{code}: {details.get('Message', error)}{hint}"
    return str(error)
