"""The registry feed: ModelVersionChanged derived from the registry's change log, crash-safe, resumable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pfactory.contracts.events import Envelope
from pfactory.gateway.adapters.sqlite import SqliteGatewayStore
from pfactory.gateway.app import create_app
from pfactory.gateway.registry_feed import CURSOR_NAME, RegistryFeed
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.model import VersionStatus
from pfactory.registry.wiring import Registry
from tests.gateway.registry_support import (
    PAIR,
    change_envelopes,
    changes,
    expected_event_id,
    make_live,
    seed,
)
from tests.gateway.support import RecordingSink, eventually, serving

APPROVE = "/v1/models/credit_default/versions/1?feature_set=credit_features@3"


async def distinct_count(sink: RecordingSink, count: int, *, timeout: float = 10.0) -> None:
    await eventually(
        lambda: len(changes(sink)) >= count, timeout=timeout, what=f"{count} distinct ModelVersionChanged"
    )


async def feed_error(client: httpx.AsyncClient) -> str | None:
    feed = (await client.get("/ready")).json()["registry_feed"]
    assert feed is not None
    error: str | None = feed["last_error"]
    return error


async def test_versions_committed_by_the_registrar_are_published_as_registered(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    sink = RecordingSink()
    async with serving(create_app(gateway_settings, sink=sink), admin_key):
        record = await seed(registry, PAIR, "job-1")  # straight into the registry, as the registrar does
        await distinct_count(sink, 1)
        [event] = changes(sink)
        assert (event.action, event.version, event.actor) == ("registered", 1, "registrar")
        assert (event.from_status, event.to_status, event.alias, event.override) == (
            None,
            "candidate",
            None,
            False,
        )
        [envelope] = change_envelopes(sink)
        assert envelope.event_id == expected_event_id(PAIR, 1, 0)
        assert envelope.occurred_at == record.audit[0].at and envelope.correlation_id == f"{PAIR}/v1"

        await make_live(registry, PAIR, 1)  # changes made by other services are published too
        await distinct_count(sink, 3)
        assert [(e.action, e.to_status, e.actor) for e in changes(sink)] == [
            ("registered", "candidate", "registrar"),
            ("status", "approved", "seed"),
            ("status", "live", "seed"),
        ]


async def test_a_change_made_while_the_broker_is_down_is_published_after_a_restart(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    await seed(registry, PAIR, "job-1")
    down = RecordingSink(down=True)
    async with serving(create_app(gateway_settings, sink=down), admin_key) as client:
        approved = await client.patch(APPROVE, json={"status": "approved", "reason": "ok"})
        assert approved.status_code == 200  # the registry changed; its event could not go out
        await eventually(lambda: down.attempts >= 3, what="the feed to retry")
        error = await feed_error(client)
        assert error is not None and "broker unreachable" in error
        assert (await client.get("/ready")).json()["registry_feed"]["cursor"] == 0
    assert down.published == []

    # the gateway "crashed" with the change unpublished; the next one publishes it from the registry
    up = RecordingSink()
    async with serving(create_app(gateway_settings, sink=up), admin_key) as client:
        await distinct_count(up, 2)
        assert [(e.action, e.to_status, e.reason) for e in changes(up)] == [
            ("registered", "candidate", None),
            ("status", "approved", "ok"),
        ]
        assert [e.event_id for e in change_envelopes(up)][-1] == expected_event_id(PAIR, 1, 1)
        await eventually(lambda: _no_error(client), what="/ready to show the feed recovered")


async def _no_error(client: httpx.AsyncClient) -> bool:
    return await feed_error(client) is None


async def test_changes_made_while_the_gateway_is_stopped_are_published_when_it_starts(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    first = RecordingSink()
    async with serving(create_app(gateway_settings, sink=first), admin_key):
        await seed(registry, PAIR, "job-1")
        await distinct_count(first, 1)
    await registry.index.transition(PAIR, 1, VersionStatus.REJECTED, actor="reviewer", reason="leaky")

    second = RecordingSink()
    async with serving(create_app(gateway_settings, sink=second), admin_key):
        await distinct_count(second, 2)
    rejected = changes(second)[-1]
    assert (rejected.action, rejected.from_status, rejected.to_status) == ("status", "candidate", "rejected")
    assert (rejected.actor, rejected.reason) == ("reviewer", "leaky")


async def test_the_cursor_survives_a_restart_so_old_changes_are_not_published_again(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    first = RecordingSink()
    async with serving(create_app(gateway_settings, sink=first), admin_key) as client:
        await seed(registry, PAIR, "job-1")
        assert (await client.patch(APPROVE, json={"status": "approved"})).status_code == 200
        await distinct_count(first, 2)
        await eventually(lambda: _caught_up(client), what="the cursor to be stored")

    second = RecordingSink()
    async with serving(create_app(gateway_settings, sink=second), admin_key):
        await seed(registry, PAIR, "job-2")  # a later change: once it is out, any replay would be too
        await distinct_count(second, 1)
    assert [(e.version, e.action) for e in changes(second)] == [(2, "registered")]
    assert [e for e in change_envelopes(second) if e.payload["version"] == 1] == []  # zero new for v1


async def _caught_up(client: httpx.AsyncClient) -> bool:
    feed = (await client.get("/ready")).json()["registry_feed"]
    return bool(feed["cursor"] == 2)  # registered, then approved: two changes of the registry


async def test_route_changes_wake_the_feed_without_waiting_for_the_poll(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    await seed(registry, PAIR, "job-1")
    slow = gateway_settings.model_copy(update={"registry_feed_interval_s": 600.0})
    sink = RecordingSink()
    async with serving(create_app(slow, sink=sink), admin_key) as client:
        await distinct_count(sink, 1)  # the start-up pass
        assert (await client.patch(APPROVE, json={"status": "approved"})).status_code == 200
        await distinct_count(sink, 2, timeout=5.0)
        alias = "/v1/models/credit_default/aliases/champion?feature_set=credit_features@3"
        assert (await client.put(alias, json={"version": 1})).status_code == 200
        await distinct_count(sink, 3, timeout=5.0)
        assert changes(sink)[-1].action == "alias_set"


@dataclass
class FailingAt(RecordingSink):
    """Fails the publish attempts whose number (1-based) is in ``failing``."""

    failing: frozenset[int] = frozenset()

    async def publish(self, envelope: Envelope, topic: str, key: str | None) -> None:
        if self.attempts + 1 in self.failing:
            self.attempts += 1
            raise ConnectionError("broker dropped the connection (test)")
        await super().publish(envelope, topic, key)


async def test_the_cursor_moves_only_after_every_event_of_the_batch_is_acknowledged(
    tmp_path: Path, registry: Registry
) -> None:
    await seed(registry, PAIR, "job-1")
    await seed(registry, PAIR, "job-2")
    await registry.index.transition(PAIR, 1, VersionStatus.APPROVED, actor="admin")
    # the change log now holds v2 (registered) then v1 (registered, approved): three events
    store = SqliteGatewayStore(tmp_path / "gateway.db")
    sink = FailingAt(failing=frozenset({3}))
    try:
        feed = RegistryFeed(registry.index, store, sink)
        with pytest.raises(ConnectionError):
            await feed.drain()
        assert len(sink.published) == 2 and await store.get_cursor(CURSOR_NAME) == 0
        assert feed.state.broker_reachable is False

        assert await feed.drain() == 1  # the whole batch again, same ids
        assert await store.get_cursor(CURSOR_NAME) == 3 and feed.state.cursor == 3
        assert len(sink.published) == 5 and len(changes(sink)) == 3
        assert [(e.version, e.action) for e in changes(sink)] == [
            (2, "registered"),
            (1, "registered"),
            (1, "status"),
        ]

        restarted = RegistryFeed(registry.index, store, sink, batch_size=1)
        assert await restarted.drain() == 0 and len(sink.published) == 5
        await registry.index.transition(PAIR, 2, VersionStatus.REJECTED, actor="admin")
        await seed(registry, PAIR, "job-3")
        assert await restarted.drain() == 2  # one version per batch, the cursor stored after each
        assert await store.get_cursor(CURSOR_NAME) == 5
        assert [(e.version, e.action) for e in changes(sink)][3:] == [(2, "status"), (3, "registered")]
    finally:
        await store.close()
