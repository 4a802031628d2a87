"""Reference distributions move into the version's folder; sweep and calibration sections stay sections."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pfactory.contracts.events import ModelRegistered, ModelTrained, RegistrationFailed
from pfactory.registrar.service import register
from pfactory.registry.layout import VersionLayout
from pfactory.registry.model import PairKey
from pfactory.registry.staging import staging_key
from pfactory.registry.wiring import Registry, RegistrySettings, build_registry
from tests.workers.registrar.factories import (
    FEATURE_SET,
    MODEL_NAME,
    good_metrics,
    reference_document,
    stage_reference,
    sweep_section,
    trained_event,
)

PAIR = PairKey(model_name=MODEL_NAME, feature_set=FEATURE_SET)
LAYOUT = VersionLayout(PAIR, 1)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    stores = await build_registry(RegistrySettings(backend="embedded", data_dir=tmp_path / "registry"))
    yield stores
    await stores.close()


async def _with_reference(registry: Registry, job_id: str = "job-ref") -> ModelTrained:
    event = await trained_event(registry.artifacts, job_id=job_id)
    uri = await stage_reference(registry.artifacts, job_id)
    return event.model_copy(update={"reference_uri": uri})


async def _visible(registry: Registry) -> list[int]:
    return [v.version for v in (await registry.index.list_versions(PAIR)).items]


async def _expire_staging(registry: Registry, job_id: str) -> None:
    """What the staging/ lifecycle rule does some days later."""
    await registry.artifacts.delete(staging_key(job_id))
    await registry.artifacts.delete(f"staging/job={job_id}/reference.json")


async def test_the_reference_is_copied_into_the_version_folder_and_outlives_staging(
    registry: Registry,
) -> None:
    event = await _with_reference(registry)

    outcome = await register(event, registry)

    assert isinstance(outcome, ModelRegistered) and outcome.version == 1
    stored = await registry.index.get(PAIR, 1)
    assert stored.reference_uri == registry.artifacts.uri(LAYOUT.reference) != event.reference_uri
    assert "staging" not in stored.reference_uri
    card = json.loads(await registry.artifacts.read(LAYOUT.card_json))
    assert card["reference_uri"] == stored.reference_uri
    await _expire_staging(registry, event.job_id)
    assert json.loads(await registry.artifacts.read(LAYOUT.reference)) == reference_document()


async def test_a_version_without_reference_distributions_records_none(registry: Registry) -> None:
    outcome = await register(await trained_event(registry.artifacts), registry)

    assert isinstance(outcome, ModelRegistered)
    assert (await registry.index.get(PAIR, outcome.version)).reference_uri is None
    assert not await registry.artifacts.exists(VersionLayout(PAIR, outcome.version).reference)


async def test_a_redelivered_event_keeps_one_version_with_one_reference(registry: Registry) -> None:
    event = await _with_reference(registry)

    first = await register(event, registry)
    second = await register(event, registry)

    assert first == second and isinstance(first, ModelRegistered)
    assert await _visible(registry) == [1]
    root = Path(registry.artifacts.uri("models").removeprefix("file://"))
    assert [p.relative_to(root).as_posix() for p in root.rglob("reference.json")] == [
        f"{PAIR}/version=1/reference.json"
    ]


async def test_a_crash_before_the_commit_resumes_with_the_reference_in_place(registry: Registry) -> None:
    event = await _with_reference(registry)

    def crash(layout: VersionLayout) -> None:
        raise SystemExit(f"killed before committing {layout.prefix}")

    with pytest.raises(SystemExit):
        await register(event, registry, after_artifacts_written=crash)
    assert await registry.artifacts.exists(LAYOUT.reference) and await _visible(registry) == []

    outcome = await register(event, registry)

    assert isinstance(outcome, ModelRegistered) and outcome.version == 1
    stored = await registry.index.get(PAIR, 1)
    assert stored.reference_uri == registry.artifacts.uri(LAYOUT.reference)
    assert json.loads(await registry.artifacts.read(LAYOUT.reference)) == reference_document()


async def test_a_reference_outside_the_store_missing_or_not_json_is_refused_and_allocates_nothing(
    registry: Registry, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "reference.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps(reference_document()))
    event = await trained_event(registry.artifacts, job_id="job-bad-ref")
    not_json = await stage_reference(registry.artifacts, "job-not-json", b"{ not json")
    a_list = await stage_reference(registry.artifacts, "job-list", b"[1, 2]")
    cases = {
        outside.as_uri(): "not inside the registry's artifact store",
        registry.artifacts.uri("x") + "/../../etc/passwd": "not inside the registry's artifact store",
        registry.artifacts.uri("staging/job=job-bad-ref/reference.json"): "were not found",
        not_json: "are not valid JSON",
        a_list: "must be a JSON object, not list",
    }

    for uri, words in cases.items():
        outcome = await register(event.model_copy(update={"reference_uri": uri}), registry)
        assert isinstance(outcome, RegistrationFailed), uri
        assert words in outcome.reason and "ModelTrained.reference_uri" in outcome.reason, outcome.reason
    foreign = await register(event.model_copy(update={"reference_uri": outside.as_uri()}), registry)
    assert isinstance(foreign, RegistrationFailed) and event.artifact.uri in foreign.reason  # where to write
    assert await _visible(registry) == []
    good = await register(await _with_reference(registry, "job-good"), registry)
    assert isinstance(good, ModelRegistered) and good.version == 1  # no number was used up


async def test_sweep_and_calibration_sections_are_kept_whole_and_never_read_as_metrics(
    registry: Registry,
) -> None:
    metrics = {**good_metrics(), "sweep": sweep_section()}
    metrics["calibration"]["bins"] = 10
    # a section that happens to carry a "value" key is still a section, not a metric
    metrics["sweep"]["value"] = 0.5
    event = await trained_event(registry.artifacts, metrics=metrics)

    outcome = await register(event, registry)

    assert isinstance(outcome, ModelRegistered)
    stored = await registry.index.get(PAIR, outcome.version)
    assert set(stored.metrics) == {"roc_auc", "pr_auc", "log_loss", "brier_score", "ks_statistic"}
    layout = VersionLayout(PAIR, outcome.version)
    assert json.loads(await registry.artifacts.read(layout.metrics)) == metrics
    card = json.loads(await registry.artifacts.read(layout.card_json))
    assert [t["run_id"] for t in card["sweep"]["trials"]] == ["trial-001", "trial-000", "trial-002"]
    assert card["sweep"]["trials"][2]["reason"] == "the fit did not converge in 100 iterations"
    assert card["calibration"]["metrics"]["ece"] == 0.021 and card["calibration"]["bins"] == 10
    markdown = (await registry.artifacts.read(layout.card_md)).decode()
    assert "| 1 | trial-001 | ✔ selected | succeeded | 0.81 |" in markdown
    assert "| expected calibration error (ECE) | 0.021 |" in markdown
