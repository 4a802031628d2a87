"""Staging: where trainers put a model binary before the registrar moves it into a version's folder.

A trainer writes ``staging/job=<job_id>/model.skops`` to the registry's artifact store and names
``store.uri(key)`` in its ``ModelTrained`` event; the registrar turns that URI back into a key of
the *same* store with :func:`key_from_uri`, so an event can never make it read anything else.
Staged objects are not deleted on registration (a redelivered event must find them again); expire
the ``staging/`` prefix with a storage lifecycle rule.
"""

from __future__ import annotations

from urllib.parse import unquote

from pfactory.contracts.events import StagedArtifact
from pfactory.registry.artifacts import ArtifactStore, check_key
from pfactory.registry.errors import RegistryError
from pfactory.registry.serialization import FORMAT

STAGING_PREFIX = "staging/"
STAGED_MODEL_FILE = "model.skops"
_PROBE = "probe"


class StagedArtifactURIError(RegistryError, ValueError):
    """A staged artifact URI that does not name a key of the registry's artifact store."""


def staging_key(job_id: str) -> str:
    """The key a training job stages its model under: ``staging/job=<job_id>/model.skops``.

    Raises:
        ValueError: the job id is empty or contains ``/``, ``\\``, or is ``.``/``..``.
    """
    if not job_id or "/" in job_id or "\\" in job_id or job_id in (".", ".."):
        raise ValueError(f"job id {job_id!r} cannot name a staging folder")
    return check_key(f"{STAGING_PREFIX}job={job_id}/{STAGED_MODEL_FILE}")


def key_from_uri(store: ArtifactStore, uri: str) -> str:
    """Turn a URI made by ``store.uri(key)`` back into ``key``.

    Args:
        store: the artifact store the URI should belong to.
        uri: e.g. ``file:///data/registry/artifacts/staging/job%3D42/model.skops`` or
            ``s3://bucket/prefix/staging/job=42/model.skops``.

    Returns:
        The key, such that ``store.uri(key) == uri``.

    Raises:
        StagedArtifactURIError: the URI is outside the store (another folder, bucket or prefix,
            another scheme) or would escape it (``..``).
    """
    probe = store.uri(_PROBE)
    base = probe[: -len(_PROBE)]
    if uri.startswith(base):
        tail = uri[len(base) :]
        for candidate in dict.fromkeys((tail, unquote(tail))):
            try:
                key = check_key(candidate)
            except ValueError:
                continue
            if store.uri(key) == uri:
                return key
    raise StagedArtifactURIError(
        f"staged artifact URI {uri!r} is not inside the registry's artifact store ({base}...); "
        "trainers must stage artifacts in that store"
    )


async def stage_model(store: ArtifactStore, job_id: str, data: bytes) -> StagedArtifact:
    """Write a job's serialised model to its staging key (trainers and tests).

    Args:
        store: the registry's artifact store.
        job_id: the training job.
        data: the skops bytes.

    Returns:
        What ``ModelTrained.artifact`` should carry: URI, sha256, size and format.
    """
    stored = await store.put(staging_key(job_id), data)
    return StagedArtifact(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, format=FORMAT)
