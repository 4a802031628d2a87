"""The OpenAPI document describes every path, the security schemes and the error answers."""

from __future__ import annotations

from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from tests.gateway.support import RecordingSink, serving


async def test_openapi_lists_every_path_with_security_and_errors(gateway_settings: GatewaySettings) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink())) as client:
        document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths) == {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/scoring-runs",
        "/v1/scoring-runs/{run_id}",
        "/v1/keys",
        "/v1/keys/{key_id}",
        "/v1/alerts",
        "/health",
        "/ready",
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/versions",
        "/v1/models/{name}/versions/{version}",
        "/v1/models/{name}/versions/{version}/artifact",
        "/v1/models/{name}/versions/{version}/card",
        "/v1/models/{name}/aliases/{alias}",
        "/v1/lineage/feature-sets/{name}/versions",
        "/v1/lineage/source-columns",
        "/v1/feature-sets",
        "/v1/feature-sets/{name}",
        "/v1/feature-sets/{name}/versions/{version}",
        "/v1/feature-sets/{name}/versions/{version}/partitions",
        "/v1/feature-sets/{name}/versions/{version}/partitions/{ds}",
        "/v1/feature-sets/{name}/versions/{version}/lineage",
        "/v1/feature-sets/{name}/versions/{version}/materialisations",
    }
    schemes = document["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyHeader"] == {
        **schemes["APIKeyHeader"],
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    for path, methods in paths.items():
        for method, operation in methods.items():
            assert operation.get("tags") and operation.get("description"), (method, path)
            if path.startswith("/v1/"):
                assert {"HTTPBearer": []} in operation["security"], (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
    submit = paths["/v1/jobs"]["post"]
    assert {"202", "409", "422", "415"} <= set(submit["responses"])
    assert {"application/json", "application/yaml", "text/yaml"} <= set(submit["requestBody"]["content"])
    assert "ValidationErrorPublic" in document["components"]["schemas"]
