"""Fixtures shared by every test: real servers start here and stop when the session ends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfactory.bus.embedded import EmbeddedBroker
from pfactory.bus.settings import BusSettings
from tests.utils.servers import reset_moto, running_moto, running_tansu

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the fixtures' servers write their logs."""
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def tansu(server_logs: Path) -> Iterator[EmbeddedBroker]:
    """One real Tansu broker for the session; tests isolate themselves with fresh topics."""
    with running_tansu(server_logs) as broker:
        yield broker


@pytest.fixture
def bus_settings(tansu: EmbeddedBroker) -> BusSettings:
    """Bus settings pointing at the session broker, with short group timeouts (Tansu joins slowly)."""
    if not tansu.running:  # a test that stopped the broker must not break the next one
        tansu.start()
    return BusSettings(
        bootstrap_servers=tansu.bootstrap_servers,
        client_id=f"test-{uuid.uuid4().hex[:6]}",
        session_timeout_ms=3_000,
        heartbeat_interval_ms=500,
        retry_backoff_initial_s=0.05,
        retry_backoff_max_s=0.2,
    )


@pytest.fixture
def topic_name() -> str:
    """A fresh topic name per test."""
    return f"pf.test.{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_endpoint(server_logs: Path) -> Iterator[str]:
    """One real moto_server for the session (S3, DynamoDB, EMR containers)."""
    with running_moto(server_logs) as endpoint:
        yield endpoint


@pytest.fixture
def moto(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """moto_server reset to empty, with fake AWS credentials in the environment."""
    reset_moto(moto_endpoint)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(key, value)
    return moto_endpoint
