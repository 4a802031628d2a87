"""Where accepted envelopes go, and where job status comes from: two small Protocols.

The relay and the app depend only on these; :mod:`pfactory.gateway.adapters.bus` implements them
on Kafka, tests may pass in-memory ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from pfactory.contracts.events import Envelope

EnvelopeHandler = Callable[[Envelope], Awaitable[None]]


class EnvelopeSink(Protocol):
    """Publishes envelopes; a return means the broker acknowledged the record."""

    async def publish(self, envelope: Envelope, topic: str, key: str | None) -> None:
        """Publish one envelope unchanged (event_id included).

        Args:
            envelope: the envelope to publish.
            topic: destination topic.
            key: partition key, or None.

        Raises:
            Exception: any failure; the outbox keeps the row and retries.
        """

    async def close(self) -> None:
        """Release connections."""


class StatusFeed(Protocol):
    """Delivers job status envelopes at least once."""

    async def run(self, handle: EnvelopeHandler) -> None:
        """Consume until cancelled, awaiting ``handle`` before acknowledging each envelope.

        Args:
            handle: applies one envelope; must be idempotent (a redelivery may follow a crash).
        """
