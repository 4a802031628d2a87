"""Registration as a domain function over the embedded stores: idempotency, refusals, gates, files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from pfactory.contracts.events import JobStatus, JobStatusChanged, ModelRegistered, RegistrationFailed
from pfactory.registrar import service
from pfactory.registrar.service import register
from pfactory.registry.errors import VersionNotFoundError
from pfactory.registry.layout import VersionLayout
from pfactory.registry.model import PairKey, VersionStatus
from pfactory.registry.serialization import load_model, sha256_hex
from pfactory.registry.staging import staging_key
from pfactory.registry.wiring import Registry, RegistrySettings, build_registry
from tests.workers.registrar.factories import FEATURE_SET, MODEL_NAME, trained_event

PAIR = PairKey(model_name=MODEL_NAME, feature_set=FEATURE_SET)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    stores = await build_registry(RegistrySettings(backend="embedded", data_dir=tmp_path / "registry"))
    yield stores
    await stores.close()


def _version_folders(registry: Registry) -> list[str]:
    root = Path(registry.artifacts.uri("models").removeprefix("file://"))
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*/version=*"))


async def _visible(registry: Registry) -> list[int]:
    return [v.version for v in (await registry.index.list_versions(PAIR)).items]


async def test_registers_a_candidate_with_its_files_and_a_loadable_artifact(registry: Registry) -> None:
    event = await trained_event(registry.artifacts)

    outcome = await register(event, registry)

    assert isinstance(outcome, ModelRegistered)
    assert (outcome.version, outcome.status, outcome.sha256) == (1, "candidate", event.artifact.sha256)
    stored = await registry.index.get(PAIR, 1)
    assert stored.status is VersionStatus.CANDIDATE and stored.allocation_key == event.job_id
    assert stored.created_by == "risk-data-science@bank.example"
    assert stored.framework == "scikit-learn" and stored.library_versions["skops"] == "0.16.0"
    assert stored.metrics["roc_auc"].ci_low == 0.78 and stored.metrics["pr_auc"].ci_high == 0.47
    assert "calibration" not in stored.metrics  # not a scalar: kept in metrics.json
    assert str(stored.lineage.start_ds) == "2024-01-01"  # the config's window fills what lineage omits
    assert stored.failed_gates == [] and len(stored.gates) == 5
    assert stored.audit[0].action == "registered" and "all 5 gates passed" in (stored.audit[0].reason or "")

    layout = VersionLayout(PAIR, 1)
    data = await registry.artifacts.read(layout.model)
    model = load_model(data, expected_sha256=outcome.sha256, version_label=stored.label)
    assert model.predict([[0.0, 0.0, 0.0, 0.0]]).shape == (1,)
    assert outcome.artifact_uri == registry.artifacts.uri(layout.model) == stored.artifact.uri
    assert yaml.safe_load(await registry.artifacts.read(layout.config)) == event.config
    assert json.loads(await registry.artifacts.read(layout.metrics)) == event.metrics
    card = json.loads(await registry.artifacts.read(layout.card_json))
    assert (
        card["owner"] == "risk-data-science@bank.example" and card["calibration"]["metrics"]["ece"] == 0.021
    )
    assert "Rank retail credit applications" in (await registry.artifacts.read(layout.card_md)).decode()


async def test_the_same_event_twice_is_one_version_and_one_artifact(registry: Registry) -> None:
    event = await trained_event(registry.artifacts)

    first = await register(event, registry)
    second = await register(event, registry)

    assert first == second and isinstance(first, ModelRegistered) and first.version == 1
    assert await _visible(registry) == [1]
    assert _version_folders(registry) == [f"{PAIR}/version=1"]
    other = await register(await trained_event(registry.artifacts), registry)
    assert isinstance(other, ModelRegistered) and other.version == 2


async def test_a_crash_before_the_commit_leaves_nothing_visible_and_the_retry_completes(
    registry: Registry,
) -> None:
    event = await trained_event(registry.artifacts)

    def crash(layout: VersionLayout) -> None:
        raise SystemExit(f"killed before committing {layout.prefix}")

    with pytest.raises(SystemExit):
        await register(event, registry, after_artifacts_written=crash)
    assert await registry.artifacts.exists(VersionLayout(PAIR, 1).model)
    assert await _visible(registry) == []
    with pytest.raises(VersionNotFoundError):
        await registry.index.get(PAIR, 1)

    outcome = await register(event, registry)

    assert isinstance(outcome, ModelRegistered) and outcome.version == 1
    assert await _visible(registry) == [1]


async def test_a_sha256_mismatch_is_refused_naming_both_hashes_and_allocates_nothing(
    registry: Registry,
) -> None:
    event = await trained_event(registry.artifacts)
    await registry.artifacts.put(
        staging_key(event.job_id), b"tampered" + await registry.artifacts.read(staging_key(event.job_id))
    )
    actual = sha256_hex(await registry.artifacts.read(staging_key(event.job_id)))

    outcome = await register(event, registry)

    assert isinstance(outcome, RegistrationFailed)
    assert event.artifact.sha256 in outcome.reason and actual in outcome.reason
    assert await _visible(registry) == [] and _version_folders(registry) == []
    # no number was used up: the next good job gets version 1
    good = await register(await trained_event(registry.artifacts), registry)
    assert isinstance(good, ModelRegistered) and good.version == 1


async def test_an_artifact_outside_the_store_or_not_skops_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    outside = (tmp_path / "elsewhere.skops").as_uri()
    event = await trained_event(registry.artifacts)
    foreign = event.model_copy(update={"artifact": event.artifact.model_copy(update={"uri": outside})})
    escaping = event.model_copy(
        update={
            "artifact": event.artifact.model_copy(
                update={"uri": registry.artifacts.uri("x") + "/../../etc/passwd"}
            )
        }
    )
    garbage = await trained_event(registry.artifacts, data=b"not a zip file")

    for bad, words in ((foreign, "not inside"), (escaping, "not inside"), (garbage, "not a readable skops")):
        outcome = await register(bad, registry)
        assert isinstance(outcome, RegistrationFailed) and words in outcome.reason, outcome
    assert await _visible(registry) == []


async def test_a_config_that_is_not_a_model_config_is_refused(registry: Registry) -> None:
    event = await trained_event(registry.artifacts, config={"kind": "FeatureSet"})

    outcome = await register(event, registry)

    assert isinstance(outcome, RegistrationFailed) and "not a Model config" in outcome.reason


async def test_gates_record_thresholds_fairness_and_what_could_not_be_evaluated(registry: Registry) -> None:
    event = await trained_event(registry.artifacts)
    config = event.config
    config["spec"]["metrics"]["thresholds"] = {"roc_auc": 0.7, "log_loss": 0.3, "pr_auc": 0.4, "f1": 0.5}
    fairness = event.fairness
    fairness["gender"]["demographic_parity_difference"] = 0.25
    del fairness["age_band"]["equal_opportunity_difference"]
    event = event.model_copy(update={"config": config, "fairness": fairness})

    outcome = await register(event, registry)

    assert isinstance(outcome, ModelRegistered)
    stored = await registry.index.get(PAIR, outcome.version)
    assert stored.gates == {
        "metric:roc_auc": True,  # 0.81 ≥ 0.7
        "metric:pr_auc": True,  # 0.42 ≥ 0.4
        "metric:log_loss": False,  # 0.41 > maximum 0.3 (lower is better)
        "metric:f1": False,  # not reported: failed, not silently passed
        "fairness:gender:demographic_parity_difference": False,  # 0.25 > 0.1
        "fairness:gender:equal_opportunity_difference": True,
        "fairness:age_band:demographic_parity_difference": True,
        "fairness:age_band:equal_opportunity_difference": False,  # not reported
    }
    reason = stored.audit[0].reason or ""
    assert (
        "f1 was not reported" in reason
        and "equal_opportunity_difference for age_band was not reported" in reason
    )
    assert "log_loss 0.41 > maximum 0.3" in reason
    card_md = (await registry.artifacts.read(VersionLayout(PAIR, outcome.version).card_md)).decode()
    assert "FAIL" in card_md and "f1 was not reported" in card_md


async def test_answers_carry_the_job_result_or_the_reason(registry: Registry) -> None:
    event = await trained_event(registry.artifacts)
    registered = await register(event, registry)
    assert isinstance(registered, ModelRegistered)

    published, status = service.answers(registered, registry.artifacts)

    assert published is registered and isinstance(status, JobStatusChanged)
    assert status.status is JobStatus.SUCCEEDED and status.job_id == event.job_id
    assert status.result["version"] == 1 and status.result["feature_set"] == "credit-features@1"
    assert status.result["card_uri"] == registry.artifacts.uri(VersionLayout(PAIR, 1).card_json)
    failed = RegistrationFailed(job_id="j", model_name=MODEL_NAME, reason="corrupt")
    _, failed_status = service.answers(failed, registry.artifacts)
    assert isinstance(failed_status, JobStatusChanged)
    assert (failed_status.status, failed_status.reason) == (JobStatus.FAILED, "corrupt")
    assert service.running(event).stage == "registering"
