"""What the gateway keeps: jobs, the outbox of envelopes to publish, API keys, feed cursors and the
feature-set catalog (:mod:`pfactory.gateway.feature_catalog`).

The Protocols name the roles; :mod:`pfactory.gateway.adapters.sqlite` is the backend.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pfactory.contracts.events import Envelope, JobKind, JobStatus, JobStatusChanged
from pfactory.gateway.feature_catalog import FeatureCatalogStore


@dataclass(frozen=True)
class JobRecord:
    """One submitted job as the gateway sees it."""

    job_id: str
    kind: JobKind
    name: str
    status: JobStatus
    config: dict[str, Any]
    submitted_by: str | None
    created_at: datetime
    updated_at: datetime
    request_event_id: str
    stage: str = ""
    progress: dict[str, Any] | None = None
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    seq: int = 0


@dataclass(frozen=True)
class OutboxRow:
    """An envelope waiting to be published."""

    row_id: int
    envelope: Envelope
    topic: str
    key: str | None
    attempts: int


@dataclass(frozen=True)
class OutboxBacklog:
    """How much the relay still has to publish."""

    pending: int
    oldest_created_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key's metadata; the secret itself is never stored, only its hash."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class StatusOutcome(enum.StrEnum):
    """What applying a ``JobStatusChanged`` did."""

    APPLIED = "applied"
    STALE = "stale"  # older or lower than what the job already shows, or a duplicate
    ALREADY_TERMINAL = "already_terminal"
    UNKNOWN_JOB = "unknown_job"


class JobStore(Protocol):
    """Jobs, accepted together with their request envelope."""

    async def accept_job(self, job: JobRecord, envelope: Envelope, topic: str, key: str | None) -> None:
        """Insert the job and its outbox row in one transaction (both or neither)."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job, or None when the id is unknown."""

    async def list_jobs(
        self,
        *,
        status: JobStatus | None,
        kind: JobKind | None,
        name: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[JobRecord]:
        """Return up to ``limit`` jobs, newest first, with ``seq`` below ``before_seq`` (keyset)."""

    async def apply_status(self, event: JobStatusChanged, occurred_at: datetime) -> StatusOutcome:
        """Move a job forward; never back from a terminal status, never to an older state."""

    async def requeue_requests(self, *, idle_before: datetime | None) -> int:
        """Put the request envelope of every non-terminal job back in the outbox (same event_id).

        Args:
            idle_before: only jobs neither updated nor re-queued since then; None means all.

        Returns:
            How many envelopes were queued.
        """


class Outbox(Protocol):
    """Envelopes accepted but not yet confirmed published."""

    async def enqueue(self, envelope: Envelope, topic: str, key: str | None) -> None:
        """Store an envelope to publish that belongs to no job (an alert raised through the API)."""

    async def pending(self, limit: int) -> list[OutboxRow]:
        """Return unpublished rows in the order they were written."""

    async def mark_published(self, row_id: int) -> None:
        """Record that the broker acknowledged the row."""

    async def mark_failed(self, row_id: int, error: str) -> None:
        """Count a failed attempt and keep its error."""

    async def backlog(self) -> OutboxBacklog:
        """Summarise what is still unpublished."""


class ApiKeyStore(Protocol):
    """Hashed API keys looked up by their id."""

    async def add_key(self, record: ApiKeyRecord, secret_hash: str) -> None:
        """Store a key (or replace the key with the same id)."""

    async def find_key(self, key_id: str) -> tuple[ApiKeyRecord, str] | None:
        """Return the key and its stored hash, or None."""

    async def list_keys(self) -> list[ApiKeyRecord]:
        """Return every key, revoked ones included, oldest first."""

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; False when the id is unknown."""

    async def touch_key(self, key_id: str) -> None:
        """Record that the key was just used."""


class CursorStore(Protocol):
    """Named positions in feeds the gateway follows (e.g. the registry's change log)."""

    async def get_cursor(self, name: str) -> int:
        """Return the stored position of a feed; 0 when none was stored yet."""

    async def set_cursor(self, name: str, value: int) -> None:
        """Store the position of a feed (in its own transaction)."""


class GatewayStore(JobStore, Outbox, ApiKeyStore, CursorStore, FeatureCatalogStore, Protocol):
    """Everything the gateway persists, behind one connection."""

    async def ping(self) -> None:
        """Raise when the store is unreachable."""

    async def close(self) -> None:
        """Release the connection."""
