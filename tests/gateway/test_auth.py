"""API keys: 401 vs 403 vs 200 per scope, admin endpoints, hashed storage."""

from __future__ import annotations

import pytest

from pfactory.gateway.adapters.sqlite import SqliteGatewayStore
from pfactory.gateway.app import create_app
from pfactory.gateway.auth import create_api_key
from pfactory.gateway.settings import GatewaySettings
from tests.gateway.support import MODEL_YAML, YAML, RecordingSink, serving


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_missing_and_unknown_keys_are_401_with_a_bearer_challenge(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink())) as client:
        for headers in (
            {},
            _bearer("pf_000000000000_" + "x" * 43),
            _bearer("not-a-key"),
            {"X-API-Key": admin_key[:-1] + ("A" if admin_key[-1] != "A" else "B")},
        ):
            response = await client.get("/v1/jobs", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["code"] in {"missing_api_key", "invalid_api_key"}


@pytest.mark.parametrize(
    ("scopes", "submit", "read", "admin"),
    [
        (["read"], 403, 200, 403),
        (["submit"], 202, 403, 403),
        (["submit", "read"], 202, 200, 403),
        (["admin"], 202, 200, 200),
    ],
)
async def test_each_scope_opens_exactly_its_endpoints(
    gateway_settings: GatewaySettings, admin_key: str, scopes: list[str], submit: int, read: int, admin: int
) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink())) as client:
        created = await client.post(
            "/v1/keys", json={"name": "tester", "scopes": scopes}, headers=_bearer(admin_key)
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        answers = {
            "submit": await client.post("/v1/jobs", content=MODEL_YAML, headers={**YAML, **_bearer(key)}),
            "read": await client.get("/v1/jobs", headers={"X-API-Key": key}),
            "admin": await client.get("/v1/keys", headers=_bearer(key)),
        }
        assert {name: answer.status_code for name, answer in answers.items()} == {
            "submit": submit,
            "read": read,
            "admin": admin,
        }
        for name, answer in answers.items():
            if answer.status_code == 403:
                assert answer.json()["required_scope"] == name
                assert f"'{name}' scope" in answer.json()["detail"]
                assert answer.json()["granted_scopes"] == sorted(scopes)


async def test_keys_are_created_listed_and_revoked(gateway_settings: GatewaySettings, admin_key: str) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        created = (await client.post("/v1/keys", json={"name": "ci", "scopes": ["read"]})).json()
        assert created["key"].startswith(f"pf_{created['key_id']}_")
        assert created["revoked"] is False and created["scopes"] == ["read"]
        listed = (await client.get("/v1/keys")).json()
        assert {key["name"] for key in listed["data"]} == {"bootstrap-admin", "ci"}
        assert all("key" not in key and "secret_hash" not in key for key in listed["data"])
        assert (await client.get("/v1/jobs", headers=_bearer(created["key"]))).status_code == 200

        revoked = await client.delete(f"/v1/keys/{created['key_id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked"] is True
        after = await client.get("/v1/jobs", headers=_bearer(created["key"]))
        assert after.status_code == 401 and after.json()["code"] == "invalid_api_key"
        assert (await client.delete("/v1/keys/000000000000")).status_code == 404
        bad = await client.post("/v1/keys", json={"name": "x", "scopes": ["root"]})
        assert bad.status_code == 422 and bad.json()["issues"][0]["path"].startswith("body.scopes")


async def test_raw_keys_never_reach_the_database(gateway_settings: GatewaySettings, admin_key: str) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        made = (await client.post("/v1/keys", json={"name": "ci", "scopes": ["read"]})).json()["key"]
    store = SqliteGatewayStore(gateway_settings.database_path)
    cli_key, _ = await create_api_key(store, "from-cli", ["submit"])
    await store.close()
    files = [path for path in gateway_settings.data_dir.iterdir() if path.name.startswith("gateway.db")]
    stored = b"".join(path.read_bytes() for path in files)
    for raw in (admin_key, made, cli_key):
        secret = raw.split("_", 2)[2]
        assert secret.encode() not in stored
        assert raw.split("_", 2)[1].encode() in stored  # the key id is stored, for the lookup


async def test_a_key_made_from_the_command_line_side_works(gateway_settings: GatewaySettings) -> None:
    store = SqliteGatewayStore(gateway_settings.database_path)
    key, record = await create_api_key(store, "ops", ["read"])
    try:
        async with serving(create_app(gateway_settings, sink=RecordingSink(), store=store), key) as client:
            assert (await client.get("/v1/jobs")).status_code == 200
            assert record.scopes == {"read"}
    finally:
        await store.close()
