"""Metadata roles: ``VersionIndex`` (allocate, commit, read) and ``VersionLifecycle`` (status, aliases)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry.model import ModelVersion, PairKey, VersionStatus


@dataclass(frozen=True)
class Allocation:
    """A version number reserved for a pair under an idempotency key."""

    pair: PairKey
    version: int
    idempotency_key: str
    committed: bool = False


@dataclass(frozen=True)
class VersionPage:
    """One page of versions; pass ``next_cursor`` back to get the next page (None: no more)."""

    items: list[ModelVersion]
    next_cursor: str | None = None


@dataclass(frozen=True)
class NamePage:
    """One page of model names, sorted; pass ``next_cursor`` back to get the next page (None: no more)."""

    items: list[str]
    next_cursor: str | None = None


@dataclass(frozen=True)
class ChangeBatch:
    """Versions changed after a cursor, oldest change first, and the cursor to poll from next."""

    items: list[ModelVersion] = field(default_factory=list)
    cursor: int = 0


@runtime_checkable
class VersionIndex(Protocol):
    """Version numbers and records of every pair. Allocated versions stay invisible until committed."""

    # ---- writes

    async def allocate(self, pair: PairKey, idempotency_key: str) -> Allocation:
        """Reserve the pair's next version number, atomically.

        Args:
            pair: the model/feature-set pair.
            idempotency_key: e.g. the training job id; the same key always gets the same number.

        Returns:
            The allocation; ``committed`` tells whether the version was already committed.
        """
        ...

    async def commit(self, record: ModelVersion) -> ModelVersion:
        """Make an allocated version visible with its full record (idempotent per allocation key).

        Args:
            record: the version; ``version`` and ``allocation_key`` must match an allocation.

        Returns:
            The stored record (the first one committed, on a repeat).

        Raises:
            NotAllocatedError: no allocation of that number under that key.
        """
        ...

    # ---- reads (committed versions only)

    async def get(self, pair: PairKey, version: int) -> ModelVersion:
        """Return one version; raises ``VersionNotFoundError`` if absent or not yet committed."""
        ...

    async def list_versions(
        self,
        pair: PairKey,
        *,
        status: VersionStatus | None = None,
        newest_first: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> VersionPage:
        """List a pair's versions by number, optionally of one status, one keyset page at a time.

        Args:
            pair: the pair.
            status: only versions in this status.
            newest_first: order by version number descending (else ascending).
            limit: the page size (1-1000).
            cursor: ``next_cursor`` of the previous page.

        Returns:
            The page.
        """
        ...

    async def query(
        self,
        *,
        status: VersionStatus | None = None,
        feature_set: str | FeatureSetRef | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> VersionPage:
        """Versions across pairs in one status and/or trained on a feature set (a name: any version).

        Args:
            status: only versions in this status.
            feature_set: a feature set name, or name@version as a ``FeatureSetRef``.
            limit: the page size (1-1000).
            cursor: ``next_cursor`` of the previous page.

        Returns:
            The page, ordered by (feature set version,) pair and version.
        """
        ...

    async def changes_since(self, cursor: int = 0, *, limit: int = 100) -> ChangeBatch:
        """Versions committed or changed after ``cursor`` (0: from the start), each in its latest state.

        Args:
            cursor: the ``cursor`` of the previous batch.
            limit: the most changes read.

        Returns:
            The batch; its ``cursor`` never goes backwards.
        """
        ...


@runtime_checkable
class VersionLifecycle(Protocol):
    """Status and alias changes, as conditional updates that append audit entries."""

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
        """Move a version to another status (see ``model.transition`` for the rules).

        Raises:
            VersionNotFoundError: no such committed version.
            IllegalTransitionError: not allowed by the lifecycle, or a failed gate without override.
        """
        ...

    async def move_alias(self, pair: PairKey, alias: str, version: int, *, actor: str) -> ModelVersion:
        """Point an alias at a version, taking it from the version that held it (one per alias per pair).

        Returns:
            The version now holding the alias.
        """
        ...

    async def remove_alias(
        self, pair: PairKey, alias: str, *, actor: str, reason: str | None = None
    ) -> ModelVersion:
        """Take an alias away from the version holding it (recorded in its audit trail).

        Returns:
            The version that held the alias, without it.

        Raises:
            VersionNotFoundError: no version holds the alias.
        """
        ...

    async def get_by_alias(self, pair: PairKey, alias: str) -> ModelVersion:
        """Return the version holding an alias; raises ``VersionNotFoundError`` if none does."""
        ...

    async def get_live(self, pair: PairKey) -> ModelVersion | None:
        """Return the pair's live version (the newest, if the old one is not archived yet)."""
        ...


@runtime_checkable
class ModelCatalog(Protocol):
    """Which models and pairs have committed versions (pairs with only pending allocations do not count)."""

    async def list_models(self, *, limit: int = 50, cursor: str | None = None) -> NamePage:
        """List the names of models with at least one committed version, sorted, a keyset page at a time.

        Args:
            limit: the page size (1-1000).
            cursor: ``next_cursor`` of the previous page.

        Returns:
            The page of names.
        """
        ...

    async def list_pairs(self, model_name: str) -> list[PairKey]:
        """Return every pair of a model with a committed version, sorted by feature set name@version (text).

        Args:
            model_name: the model.

        Returns:
            The pairs; empty when the model has none.
        """
        ...


def encode_cursor(values: list[object]) -> str:
    """Opaque keyset cursor from the sort key of a page's last item."""
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str) -> list[Any]:
    """The sort key a cursor holds; ``ValueError`` if it is not one this registry made."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"malformed page cursor {cursor!r}") from error
    if not isinstance(values, list):
        raise ValueError(f"malformed page cursor {cursor!r}")
    return values


def check_limit(limit: int) -> int:
    """Return the page size if within 1-1000, else ``ValueError``."""
    if not 1 <= limit <= 1000:
        raise ValueError(f"page size {limit} must be between 1 and 1000")
    return limit
