"""The ``ArtifactStore`` role: bytes under keys, with their sha256, on a local folder or S3."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class StoredObject:
    """What a put wrote."""

    key: str
    uri: str
    sha256: str
    size_bytes: int


@runtime_checkable
class ArtifactStore(Protocol):
    """Binary artifacts under ``/``-separated keys; a put replaces the object atomically."""

    async def put(self, key: str, data: bytes | Path) -> StoredObject:
        """Store bytes, or a file's content, under a key, replacing what was there.

        Args:
            key: the object key, e.g. ``models/model=m/feature_set=f@1/version=3/model.skops``.
            data: the content, or a path to a file to copy (streamed, not read whole).

        Returns:
            The key, its URI, the content's sha256 (hex) and size in bytes.
        """
        ...

    def open(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Stream an object's content.

        Args:
            key: the object key.
            chunk_size: the largest chunk yielded.

        Returns:
            An async iterator of chunks; it raises ``ArtifactNotFoundError`` on first use if the
            key holds nothing.
        """
        ...

    async def read(self, key: str) -> bytes:
        """Return an object's whole content; raises ``ArtifactNotFoundError`` if missing."""
        ...

    async def exists(self, key: str) -> bool:
        """Return True if an object is stored under the key."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object under the key; removing a missing key is not an error."""
        ...

    def uri(self, key: str) -> str:
        """Return the URI of a key (``file://...`` or ``s3://bucket/...``), whether or not it exists."""
        ...


def sha256_file(path: Path, chunk_size: int = CHUNK_SIZE) -> tuple[str, int]:
    """Return the sha256 (hex) and size of a file, reading it in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_key(key: str) -> str:
    """Return the key if it is relative and has no empty, ``.`` or ``..`` parts; else ``ValueError``."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in key:
        raise ValueError(f"artifact key {key!r} must be a relative '/'-separated path without '.' or '..'")
    return key
