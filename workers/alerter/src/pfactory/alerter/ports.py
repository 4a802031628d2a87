"""The roles the router's domain talks to: the pager, the notifier and the incident state."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pydantic import SecretStr

from pfactory.alerter.model import Delivery, Incident, Notice, Page


class Pager(Protocol):
    """PagerDuty's Events API v2 (or a stand-in)."""

    async def trigger(self, page: Page, routing_key: SecretStr | None) -> Delivery:
        """Open (or add to) the incident ``page.dedup_key``; ``routing_key`` None: log, do not send.

        Raises:
            PagerUnavailable: not accepted after the bounded retries.
        """
        ...

    async def acknowledge(self, dedup_key: str, routing_key: SecretStr) -> Delivery:
        """Acknowledge the incident (it stops escalating).

        Raises:
            PagerUnavailable: not accepted after the bounded retries.
        """
        ...

    async def resolve(self, dedup_key: str, routing_key: SecretStr) -> Delivery:
        """Resolve the incident.

        Raises:
            PagerUnavailable: not accepted after the bounded retries.
        """
        ...


class Notifier(Protocol):
    """Datadog events (or a stand-in); best effort, never raises for the remote's failures."""

    async def post(self, notice: Notice) -> bool:
        """Post one event; whether it was accepted."""
        ...


class IncidentStore(Protocol):
    """Open incidents by dedup key, and the alert events already handled; durable."""

    async def seen(self, event_id: str) -> bool:
        """Whether the event was handled before (a redelivery)."""
        ...

    async def get_open(self, dedup_key: str) -> Incident | None:
        """The open incident of ``dedup_key``, if any."""
        ...

    async def list_open(self) -> list[Incident]:
        """Every open incident, oldest first."""
        ...

    async def record(
        self,
        event_id: str,
        *,
        opened: Incident | None = None,
        repeat_of: str | None = None,
        closed: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Mark ``event_id`` handled and, in the same transaction, open, count a repeat or close.

        Args:
            event_id: the handled event.
            opened: an incident to open (ignored if its key is already open).
            repeat_of: a dedup key whose open incident saw the alert again.
            closed: a dedup key whose open incident is resolved.
            at: when (the close time).
        """
        ...

    async def acknowledge(self, dedup_key: str, at: datetime) -> Incident | None:
        """Note the open incident as acknowledged; the incident, or None when none is open."""
        ...
