"""The moto_server fixture the registry and materialiser issues build on: real HTTP, reset between tests."""

from __future__ import annotations

import aioboto3
import pytest

from tests.utils.servers import reset_moto

pytestmark = pytest.mark.integration


async def _bucket_names(endpoint: str) -> list[str]:
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=endpoint, region_name="eu-west-1") as s3:
        response = await s3.list_buckets()
        return [bucket["Name"] for bucket in response.get("Buckets", [])]


async def test_s3_and_dynamodb_round_trip(moto: str) -> None:
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=moto, region_name="eu-west-1") as s3:
        await s3.create_bucket(
            Bucket="pf-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        await s3.put_object(Bucket="pf-artifacts", Key="models/x/model.skops", Body=b"abc")
        body = await (await s3.get_object(Bucket="pf-artifacts", Key="models/x/model.skops"))["Body"].read()
    assert body == b"abc"
    async with session.client("dynamodb", endpoint_url=moto, region_name="eu-west-1") as ddb:
        await ddb.create_table(
            TableName="pf-registry",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        await ddb.put_item(TableName="pf-registry", Item={"pk": {"S": "model#credit"}})
        item = await ddb.get_item(TableName="pf-registry", Key={"pk": {"S": "model#credit"}})
    assert item["Item"]["pk"]["S"] == "model#credit"


async def test_reset_forgets_everything(moto: str) -> None:
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=moto, region_name="eu-west-1") as s3:
        await s3.create_bucket(
            Bucket="pf-temp", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
    assert "pf-temp" in await _bucket_names(moto)
    reset_moto(moto)
    assert await _bucket_names(moto) == []
