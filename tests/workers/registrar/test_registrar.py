"""The registrar as its real process on the real broker: registration, a kill between the steps, AWS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.reading import read_envelopes
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope
from pfactory.registry.dynamodb import DynamoDBVersionIndex
from pfactory.registry.errors import VersionNotFoundError
from pfactory.registry.layout import VersionLayout
from pfactory.registry.local import LocalArtifactStore
from pfactory.registry.model import PairKey
from pfactory.registry.s3 import S3ArtifactStore
from pfactory.registry.serialization import load_model
from pfactory.registry.settings import DynamoDBVersionIndexSettings, S3ArtifactStoreSettings
from pfactory.registry.sqlite import SqliteVersionIndex
from pfactory.telemetry import catalog
from tests.utils.statsd import capturing_statsd
from tests.workers.registrar.factories import (
    FEATURE_SET,
    MODEL_NAME,
    reference_document,
    stage_reference,
    trained_event,
)
from tests.workers.support import collect, http_status, publish, running_worker, wait_for

pytestmark = pytest.mark.integration

PAIR = PairKey(model_name=MODEL_NAME, feature_set=FEATURE_SET)


def _for_job(job_id: str, *, status: str | None = None) -> Callable[[Envelope], bool]:
    def keep(envelope: Envelope) -> bool:
        payload = envelope.payload
        return payload.get("job_id") == job_id and (status is None or payload.get("status") == status)

    return keep


def _log_dir(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


async def test_a_trained_model_becomes_a_visible_loadable_version_and_the_job_succeeds(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    data_dir = tmp_path / "registry"
    store = LocalArtifactStore(data_dir / "artifacts")
    event = await trained_event(store)
    with capturing_statsd() as statsd:
        env = {
            "PF_REGISTRY_DATA_DIR": str(data_dir),
            "PF_TELEMETRY_STATSD_PORT": str(statsd.port),
            "PF_REGISTRAR_VERSIONS_GAUGE_MIN_GAP_S": "0",
        }
        with running_worker("registrar", bus_settings, _log_dir(tmp_path, "logs"), extra_env=env) as worker:
            sent = await publish(bus_settings, event)
            (registered,) = await collect(
                bus_settings, topics.MODEL_REGISTERED, _for_job(event.job_id), count=1, timeout_s=60
            )
            statuses = await collect(
                bus_settings, topics.JOB_STATUS, _for_job(event.job_id), count=2, timeout_s=15
            )
            assert http_status(f"{worker.url}/ready") == 200
            handled = {"group": worker.group_id, "topic": topics.MODEL_TRAINED, "outcome": "ok"}
            candidates = catalog.REGISTRY_VERSIONS.name
            statsd.wait_for(
                lambda: (
                    bool(statsd.named(catalog.MESSAGES_HANDLED.name, **handled))
                    and any(line.value == 1 for line in statsd.named(candidates, status="candidate"))
                ),
                10,
                "the registration handled and the registry recounted",
            )
        [line] = statsd.named(catalog.MODELS_REGISTERED.name, service="registrar")
        assert (line.tags["model"], line.tags["feature_set"], line.value) == (
            MODEL_NAME,
            "credit-features@1",
            1,
        )

    assert registered.causation_id == sent.event_id and registered.producer == "registrar"
    assert registered.payload["version"] == 1 and registered.payload["status"] == "candidate"
    assert [(s.payload["status"], s.payload["stage"]) for s in statuses] == [
        ("running", "registering"),
        ("succeeded", "registered"),
    ]
    result = statuses[1].payload["result"]
    assert (
        result["version"] == 1
        and result["model"] == MODEL_NAME
        and result["feature_set"] == "credit-features@1"
    )
    layout = VersionLayout(PAIR, 1)
    assert result["artifact_uri"] == store.uri(layout.model) and result["card_uri"] == store.uri(
        layout.card_json
    )
    async with SqliteVersionIndex(data_dir / "registry.db") as index:
        stored = await index.get(PAIR, 1)
    assert stored.artifact.sha256 == registered.payload["sha256"] == event.artifact.sha256
    model = load_model(
        await store.read(layout.model),
        expected_sha256=registered.payload["sha256"],
        version_label=stored.label,
    )
    assert model.predict([[0.1, 0.2, 0.3, 0.4]]).shape == (1,)
    assert "Rank retail credit applications" in (await store.read(layout.card_md)).decode()


async def test_a_registrar_killed_between_artifact_write_and_commit_loses_nothing_and_shows_nothing_half_done(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    data_dir = tmp_path / "registry"
    store = LocalArtifactStore(data_dir / "artifacts")
    event = await trained_event(store)
    event = event.model_copy(update={"reference_uri": await stage_reference(store, event.job_id)})
    group_id = f"test-registrar-{uuid.uuid4().hex[:8]}"
    env = {"PF_REGISTRY_DATA_DIR": str(data_dir)}
    layout = VersionLayout(PAIR, 1)

    crashing = {**env, "PF_REGISTRAR_CRASH_AFTER": "artifact_write"}
    with running_worker(
        "registrar", bus_settings, _log_dir(tmp_path, "first"), extra_env=crashing, group_id=group_id
    ) as worker:
        await publish(bus_settings, event)
        wait_for(lambda: worker.process.poll() is not None, 60, "the registrar's crash", worker.log)
        assert worker.process.returncode == 1, worker.log()
        assert "crash_after=artifact_write" in worker.log()

    assert await store.exists(layout.model) and await store.exists(layout.card_json)
    assert await store.exists(layout.reference)
    async with SqliteVersionIndex(data_dir / "registry.db") as index:
        assert (await index.list_versions(PAIR)).items == []
        with pytest.raises(VersionNotFoundError):
            await index.get(PAIR, 1)

    with running_worker(
        "registrar", bus_settings, _log_dir(tmp_path, "second"), extra_env=env, group_id=group_id
    ):
        await collect(
            bus_settings, topics.JOB_STATUS, _for_job(event.job_id, status="succeeded"), count=1, timeout_s=60
        )
        # at-least-once may publish an answer twice, but always under the same event id
        seen = await read_envelopes(
            bus_settings, topics.MODEL_REGISTERED, keep=_for_job(event.job_id), count=10, timeout_s=2
        )

    assert len({item.envelope.event_id for item in seen}) == 1
    assert {item.envelope.payload["version"] for item in seen} == {1}
    async with SqliteVersionIndex(data_dir / "registry.db") as index:
        assert [v.version for v in (await index.list_versions(PAIR)).items] == [1]
        stored = await index.get(PAIR, 1)
    assert stored.allocation_key == event.job_id and stored.artifact.sha256 == event.artifact.sha256
    assert stored.reference_uri == store.uri(layout.reference)
    assert json.loads(await store.read(layout.reference)) == reference_document()
    versions = sorted(p.name for p in (data_dir / "artifacts" / "models").glob("*/*/version=*"))
    assert versions == ["version=1"]


async def test_the_registrar_registers_on_s3_and_dynamodb(
    bus_settings: BusSettings, moto: str, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    bucket = f"pf-registry-{uuid.uuid4().hex[:8]}"
    s3_settings = S3ArtifactStoreSettings(bucket=bucket, endpoint_url=moto)
    async with S3ArtifactStore(s3_settings) as store:
        await store.create_bucket()
        event = await trained_event(store)
    env = {
        "PF_REGISTRY_BACKEND": "aws",
        "PF_REGISTRY_S3__BUCKET": bucket,
        "PF_REGISTRY_S3__ENDPOINT_URL": moto,
        "PF_REGISTRY_DYNAMODB__ENDPOINT_URL": moto,
    }

    with running_worker("registrar", bus_settings, _log_dir(tmp_path, "logs"), extra_env=env):
        await publish(bus_settings, event)
        (registered,) = await collect(
            bus_settings, topics.MODEL_REGISTERED, _for_job(event.job_id), count=1, timeout_s=60
        )

    layout = VersionLayout(PAIR, registered.payload["version"])
    assert registered.payload["artifact_uri"] == f"s3://{bucket}/{layout.model}"
    async with DynamoDBVersionIndex(DynamoDBVersionIndexSettings(endpoint_url=moto)) as index:
        stored = await index.get(PAIR, registered.payload["version"])
    async with S3ArtifactStore(s3_settings) as store:
        data = await store.read(layout.model)
        assert await store.exists(layout.card_md)
    assert stored.failed_gates == []
    model = load_model(data, expected_sha256=stored.artifact.sha256, version_label=stored.label)
    assert model.predict([[0.0, 0.0, 0.0, 0.0]]).shape == (1,)
