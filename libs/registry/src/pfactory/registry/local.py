"""``LocalArtifactStore``: the artifact store on a local folder, same key layout as S3."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from pfactory.registry.artifacts import CHUNK_SIZE, StoredObject, check_key, sha256_file
from pfactory.registry.errors import ArtifactNotFoundError


class LocalArtifactStore:
    """Artifacts as files under ``root``; writes go to a temp file then ``os.replace`` (atomic)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def uri(self, key: str) -> str:
        """Return ``file://`` URI of the key."""
        return self._path(key).as_uri()

    async def put(self, key: str, data: bytes | Path) -> StoredObject:
        """Write atomically: readers see the old object or the new one, never a part."""
        target = self._path(key)
        sha256, size = await asyncio.to_thread(self._write, target, data)
        return StoredObject(key=key, uri=target.as_uri(), sha256=sha256, size_bytes=size)

    @staticmethod
    def _write(target: Path, data: bytes | Path) -> tuple[str, int]:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                if isinstance(data, Path):
                    with data.open("rb") as source:
                        shutil.copyfileobj(source, handle, CHUNK_SIZE)
                else:
                    handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            result = (
                sha256_file(tmp) if isinstance(data, Path) else (hashlib.sha256(data).hexdigest(), len(data))
            )
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return result

    async def open(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Stream the file in chunks."""
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFoundError(f"no artifact under {key!r} ({path})") from None
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def read(self, key: str) -> bytes:
        """Return the file's content."""
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFoundError(f"no artifact under {key!r} ({path})") from None

    async def exists(self, key: str) -> bool:
        """True if the file exists."""
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        """Remove the file if present."""
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(key).unlink)

    async def close(self) -> None:
        """Nothing to release; present so every backend closes the same way."""

    async def __aenter__(self) -> LocalArtifactStore:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
