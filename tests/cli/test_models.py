"""``pfactory models`` against a real gateway (uvicorn on a free port) over a seeded registry."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from pfactory.bus.embedded import free_port
from pfactory.cli.main import app
from pfactory.gateway.app import create_app
from pfactory.gateway.auth import new_api_key
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.wiring import build_registry
from tests.gateway.registry_support import BUREAU_PAIR, LIMIT_PAIR, PAIR, make_live, seed
from tests.gateway.support import RecordingSink


@dataclass
class Served:
    url: str
    admin_key: str
    home: Path


async def _seed(settings: GatewaySettings) -> None:
    registry = await build_registry(settings.registry_settings())
    try:
        for key in ("job-1", "job-2"):
            await seed(registry, PAIR, key)
        await seed(registry, PAIR, "job-3", gates={"fairness": False, "validation": True})
        await seed(registry, BUREAU_PAIR, "job-b1")
        await seed(
            registry,
            LIMIT_PAIR,
            "job-l1",
            config={"kind": "Model", "metadata": {"name": "credit_limit", "owner": "limits@bank.example"}},
        )
        await make_live(registry, PAIR, 2)
    finally:
        await registry.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway on a free port over a registry seeded once for the module (tests that change it use v1/v3)."""
    home = tmp_path_factory.mktemp("cli-models")
    key = new_api_key()[0]
    settings = GatewaySettings(
        data_dir=home / "gateway",
        bootstrap_admin_key=key,
        bus_enabled=False,
        outbox_poll_interval_s=0.05,
    )
    asyncio.run(_seed(settings))
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, sink=RecordingSink()),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test gateway did not start within 20 s")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", key, home)
    finally:
        server.should_exit = True
        thread.join(15)


def cli(served: Served, *args: str, key: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        [*args, "--url", served.url, "--api-key", key or served.admin_key, "--home", str(served.home)],
        env={"COLUMNS": "200"},
    )
    return result.exit_code, result.output


def test_models_list_shows_each_pair_with_latest_and_live(served: Served) -> None:
    code, out = cli(served, "models", "list")
    assert code == 0, out
    rows = [line for line in out.splitlines() if "credit_" in line]
    assert any(
        "credit_default" in r and "credit_features@3" in r and " 3 " in r and " 2 " in r for r in rows
    ), out
    assert any("credit_default" in r and "bureau_features@1" in r for r in rows), out
    assert any("credit_limit" in r and "credit_features@4" in r for r in rows), out
    code, raw = cli(served, "models", "list", "--json")
    assert code == 0 and [m["name"] for m in json.loads(raw)["data"]] == ["credit_default", "credit_limit"]


def test_models_show_lists_versions_per_feature_set_and_one_version_in_detail(served: Served) -> None:
    code, out = cli(served, "models", "show", "credit_default")
    assert code == 0, out
    assert "credit_default on bureau_features@1" in out and "credit_default on credit_features@3" in out
    assert "live" in out and "fairness" in out  # v2 live; v3 failed its fairness gate
    assert "roc_auc 0.81 [0.78, 0.84]" in out

    code, out = cli(
        served, "models", "show", "credit_default", "--version", "2", "--feature-set", "credit_features@3"
    )
    assert code == 0, out
    assert "live" in out and "audit trail" in out and "registered" in out and "approved → live" in out

    code, out = cli(served, "models", "show", "credit_default", "--version", "2")
    assert code == 1
    assert "bureau_features@1, credit_features@3" in out and "--feature-set" in out

    code, out = cli(served, "models", "show", "no_such_model")
    assert code == 1 and "no model named 'no_such_model'" in out and "/v1/models" in out
    code, out = cli(served, "models", "show", "credit_limit", "--version", "9")
    assert code == 1 and "has no version 9" in out


def test_models_card_prints_or_writes_each_format(served: Served, tmp_path: Path) -> None:
    code, out = cli(served, "models", "card", "credit_limit", "--version", "1")
    assert code == 0, out
    assert out.startswith("# Model card: credit_limit v1") and "limits@bank.example" in out

    target = tmp_path / "card.html"
    code, out = cli(
        served, "models", "card", "credit_limit", "-v", "1", "--format", "html", "--out", str(target)
    )
    assert code == 0 and "wrote the html card" in out
    assert target.read_text().startswith("<!DOCTYPE html>")

    code, out = cli(served, "models", "card", "credit_limit", "-v", "1", "--format", "json")
    assert code == 0 and json.loads(out)["owner"] == "limits@bank.example"


def test_promote_follows_the_lifecycle_and_the_gates(served: Served) -> None:
    fs = ("--feature-set", "credit_features@3")
    code, out = cli(served, "models", "promote", "credit_default", "--version", "1", "--to", "live", *fs)
    assert code == 1 and "cannot move from candidate to live" in out and "approved" in out

    code, out = cli(served, "models", "promote", "credit_default", "--version", "3", "--to", "approved", *fs)
    assert code == 1 and "failed its gates (fairness)" in out and "--override" in out
    code, out = cli(
        served, "models", "promote", "credit_default", "-v", "3", "--to", "approved", "--override", *fs
    )
    assert code == 2 and "--reason" in out
    reason = "accepted by the risk committee"
    code, out = cli(
        served,
        "models",
        "promote",
        "credit_default",
        "-v",
        "3",
        "--to",
        "approved",
        "--override",
        "--reason",
        reason,
        *fs,
    )
    assert code == 0 and "is now approved" in out and "override recorded" in out
    detail = httpx.get(
        f"{served.url}/v1/models/credit_default/versions/3?feature_set=credit_features@3",
        headers={"Authorization": f"Bearer {served.admin_key}"},
    ).json()
    assert (detail["audit"][-1]["action"], detail["audit"][-1]["reason"]) == ("override", reason)

    code, out = cli(served, "models", "alias", "credit_default", "challenger", "--version", "3", *fs)
    assert code == 0 and "challenger → credit_default v3" in out

    reader = httpx.post(
        f"{served.url}/v1/keys",
        json={"name": "reader", "scopes": ["read"]},
        headers={"Authorization": f"Bearer {served.admin_key}"},
    ).json()["key"]
    code, out = cli(
        served, "models", "promote", "credit_default", "-v", "1", "--to", "approved", *fs, key=reader
    )
    assert code == 3 and "403" in out and "lacks the scope" in out
    assert cli(served, "models", "list", key=reader)[0] == 0
