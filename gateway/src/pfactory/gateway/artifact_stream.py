"""Serving a version's artifact: checked against its registered sha256 before and while it streams."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.errors import ArtifactIntegrityError
from pfactory.registry.model import ModelVersion

log = logging.getLogger("pfactory.gateway.artifacts")


def mismatch_message(record: ModelVersion, actual_sha256: str, actual_size: int) -> str:
    """Says which version, and both hashes and sizes."""
    return (
        f"{record.label}: the stored artifact has sha256 {actual_sha256} ({actual_size} bytes) but the "
        f"registry recorded {record.artifact.sha256} ({record.artifact.size_bytes} bytes); it is refused"
    )


async def digest_of(store: ArtifactStore, key: str) -> tuple[str, int]:
    """The sha256 (hex) and size of a stored object, streamed.

    Raises:
        ArtifactNotFoundError: nothing is stored under ``key``.
    """
    digest, size = hashlib.sha256(), 0
    async for chunk in store.open(key):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


async def open_checked(store: ArtifactStore, key: str, record: ModelVersion) -> AsyncIterator[bytes]:
    """Open the artifact (so a missing one fails now, before any answer) and stream it checked.

    The last chunk is held back until the whole content's sha256 is known: a mismatch aborts the
    response before it completes, so a client never receives a whole artifact that is not the
    registered one.

    Raises:
        ArtifactNotFoundError: nothing is stored under ``key`` (raised here, not while streaming).
    """
    chunks = aiter(store.open(key))
    first = await anext(chunks, None)
    return _checked(record, first, chunks)


async def _checked(
    record: ModelVersion, first: bytes | None, rest: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    expected_size = record.artifact.size_bytes
    digest, size = hashlib.sha256(), 0
    held = first
    if held is not None:
        digest.update(held)
        size = len(held)
    async for chunk in rest:
        if size > expected_size:
            break
        assert held is not None
        yield held
        digest.update(chunk)
        size += len(chunk)
        held = chunk
    if size != expected_size or digest.hexdigest() != record.artifact.sha256:
        message = mismatch_message(
            record, digest.hexdigest() if size <= expected_size else "(too long)", size
        )
        log.error("aborting a download: %s", message)
        raise ArtifactIntegrityError(message)
    if held is not None:
        yield held
