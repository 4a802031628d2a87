"""The feature-set catalog on real servers: outcomes from the Tansu broker, partition reports from S3
(moto_server)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from pfactory.bus import BusSettings, EventPublisher, build_broker
from pfactory.contracts import topics
from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from tests.gateway.support import YAML, RecordingSink, eventually, serving
from tests.gateway.test_feature_sets import DERIVED, FS_YAML, REF, VERSION_URL, failed, materialised

pytestmark = pytest.mark.integration


async def test_outcomes_on_the_bus_reach_the_catalog(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings
) -> None:
    worker = build_broker(bus_settings, service="test-materialiser")
    await worker.connect()
    publisher = EventPublisher(worker, "materialiser")
    try:
        async with serving(create_app(gateway_settings, bus=bus_settings), admin_key) as client:
            assert (await client.post("/v1/jobs", content=FS_YAML, headers=YAML)).status_code == 202
            now = datetime.now(UTC)
            good = materialised(date(2024, 1, 1), at=now, lineage=DERIVED)
            await publisher.publish_envelope(good, topics.FEATURES_MATERIALISED, REF.name)
            bad = failed(date(2024, 1, 2), at=now)
            await publisher.publish_envelope(bad, topics.MATERIALISATION_FAILED, REF.name)

            async def recorded() -> bool:
                days = (await client.get(f"{VERSION_URL}/partitions")).json()
                return bool(days["good"] == 1 and days["failed"] == 1)

            await eventually(recorded, timeout=60, what="both days to be recorded from the bus")
            lineage = (await client.get(f"{VERSION_URL}/lineage")).json()
            assert {item["origin"] for item in lineage["data"]} == {"derived"}
    finally:
        await worker.stop()


async def test_partition_reports_are_read_from_s3_with_an_endpoint_override(
    gateway_settings: GatewaySettings, admin_key: str, moto: str
) -> None:
    import boto3  # type: ignore[import-untyped]
    from pyarrow import fs

    boto3.client("s3", endpoint_url=moto, region_name="eu-west-1").create_bucket(
        Bucket="features", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    scheme, _, host = moto.rpartition("://")
    s3 = fs.S3FileSystem(endpoint_override=host, scheme=scheme, region="eu-west-1")
    folder = "features/prod/features/feature_set=credit_features/version=3/ds=2024-01-01"
    for name, body in {
        "_stats.json": {"rows": 2, "columns": {}},
        "_validation.json": {"engine": "great_expectations", "success": True, "results": []},
        "_SUCCESS": {"rows": 2, "config_hash": "x" * 64},
    }.items():
        with s3.open_output_stream(f"{folder}/{name}") as stream:
            stream.write(json.dumps(body).encode())
    settings = gateway_settings.model_copy(
        update={
            "feature_store_root": "s3://features/prod",
            "feature_store_endpoint_url": moto,
            "feature_store_region": "eu-west-1",
        }
    )
    async with serving(create_app(settings, sink=RecordingSink()), admin_key) as client:
        assert (await client.post("/v1/jobs", content=FS_YAML, headers=YAML)).status_code == 202
        day = (await client.get(f"{VERSION_URL}/partitions/2024-01-01")).json()
        assert (day["status"], day["rows"], day["statistics"]["rows"]) == ("good", 2, 2)
        assert day["uri"] == f"s3://{folder}" and day["validation"]["success"] is True
        assert day["recorded_status"] is None and day["config_hash_matches"] is False
        assert "another config" in day["note"]
        assert (await client.get(f"{VERSION_URL}/partitions/2024-01-02")).status_code == 404
