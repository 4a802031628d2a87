"""The trainer as its real process on the real broker, training the example credit model.

Features are the example's, written in the materialiser's layout (``credit_data``); the trainer forks
its runs from a warm fork server, stages the selected model in the registry's artifact store and
answers on the bus. Covered: a sweep to a staged champion with its trials in the job record; a
redelivered request answered from the durable record with the same event ids and no new training;
a job that exhausts its memory limit failing alone while two others finish; health and shutdown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import (
    Envelope,
    FeatureSetRef,
    JobStatus,
    JobStatusChanged,
    ModelRegistered,
    ModelTrained,
    TrainingFailed,
    TrainRequested,
)
from pfactory.registry.local import LocalArtifactStore
from pfactory.registry.serialization import load_model
from pfactory.registry.staging import key_from_uri
from pfactory.telemetry import catalog
from tests.utils.statsd import StatsdCapture, capturing_statsd
from tests.workers.support import collect, http_status, publish, running_worker, wait_for
from tests.workers.trainer.credit_data import credit_config, write_credit_store

pytestmark = pytest.mark.integration

START = dt.date(2024, 1, 1)
DAYS = 6


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_credit_store(
        tmp_path_factory.mktemp("credit"), start=START, days=DAYS, applicants_per_day=300
    )


def _request(config: dict[str, Any]) -> TrainRequested:
    return TrainRequested(
        job_id=str(uuid.uuid4()),
        model_name="credit-default",
        config=config,
        feature_set=FeatureSetRef(name="credit-features", version="1"),
        submitted_by="test",
    )


def _config(raw: Path, **spec: Any) -> dict[str, Any]:
    config = credit_config(raw, start=START, end=START + dt.timedelta(days=DAYS - 1), **spec)
    config["spec"]["fairness"]["min_group_size"] = 10  # the test split holds about 30 applicants aged 18-24
    config["spec"]["pipeline"]["estimator"]["params"]["max_iter"] = 30
    return config


def _env(tmp_path: Path, store: Path, **extra: str) -> dict[str, str]:
    return {
        "PF_REGISTRY_DATA_DIR": str(tmp_path / "registry"),
        "PF_TRAINER_FEATURE_STORE_ROOT": str(store),
        "PF_TRAINER_SCRATCH_DIR": str(tmp_path / "scratch"),
        **extra,
    }


async def _publish_again(settings: BusSettings, envelope: Envelope, key: str | None) -> None:
    """The very same envelope (same event id) once more, as a redelivery or a gateway re-publish sends it."""
    client = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await client.start()
    try:
        await client.send_and_wait(
            topics.TRAIN_REQUESTED, envelope.to_bytes(), key=key.encode() if key else None
        )
    finally:
        await client.stop()


async def test_a_sweep_trains_in_isolation_and_stages_the_champion_once(
    bus_settings: BusSettings, tmp_path: Path, credit: tuple[Path, Path]
) -> None:
    raw, store = credit
    await ensure_topics(bus_settings)
    config = _config(raw)
    # a 2 x 2 grid keeps this fast; the example's own 12-trial grid runs in tests/e2e/test_train_to_registered.py
    config["spec"]["sweep"]["params"] = {
        "estimator.max_depth": [3, 5],
        "estimator.learning_rate": [0.05, 0.1],
    }
    request = _request(config)
    with (
        capturing_statsd() as statsd,
        running_worker(
            "trainer",
            bus_settings,
            tmp_path,
            extra_env=_env(tmp_path, store, PF_TELEMETRY_STATSD_PORT=str(statsd.port)),
        ) as worker,
    ):
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 90, "trainer /health", worker.log)
        sent = await publish(bus_settings, request)
        trained = await collect(
            bus_settings,
            topics.MODEL_TRAINED,
            lambda e: e.correlation_id == request.job_id,
            count=1,
            timeout_s=120,
        )
        event = trained[0].open_as(ModelTrained)

        store_ = LocalArtifactStore(tmp_path / "registry" / "artifacts")
        data = await store_.read(key_from_uri(store_, event.artifact.uri))
        model = load_model(data, expected_sha256=event.artifact.sha256, version_label="staged")
        sweep = event.metrics["sweep"]
        assert [t["status"] for t in sweep["trials"]] == ["succeeded"] * 4
        best = max(sweep["trials"], key=lambda t: t["metrics"]["roc_auc"])
        assert sweep["selected"] == [best["run_id"]]
        assert {
            f"estimator__{k.split('.')[1]}": v for k, v in best["params"].items()
        }.items() <= model.get_params().items()
        assert event.metrics["roc_auc"]["value"] == pytest.approx(best["metrics"]["roc_auc"])
        assert (
            event.reference_uri
            and json.loads(await store_.read(key_from_uri(store_, event.reference_uri)))["features"]
        )
        assert event.fairness["age_band"]["demographic_parity_difference"] > 0.1
        assert event.lineage["row_counts"]["train"] > 0 and event.lineage["submitted_by"] == "test"

        statuses = [
            e.open_as(JobStatusChanged)
            for e in await collect(
                bus_settings,
                topics.JOB_STATUS,
                lambda e: e.correlation_id == request.job_id,
                count=6,
                timeout_s=30,
            )
        ]
        assert [s.progress.done for s in statuses if s.progress and s.stage == "training"] == [0, 1, 2, 3, 4]
        final = statuses[-1]
        assert final.stage == "trained" and final.status is JobStatus.RUNNING
        assert (
            len(final.result["training"]["trials"]) == 4
            and final.result["training"]["selected"] == sweep["selected"]
        )
        assert all(e.causation_id == sent.event_id for e in trained)
        _assert_stage_durations(statsd, final.result["training"]["trials"], worker.group_id)

        # the same request again: answered from the record, same event ids, no run started
        runs_before = sorted(p.name for p in (tmp_path / "scratch").rglob("result.json"))
        handled = {"group": worker.group_id, "topic": topics.TRAIN_REQUESTED, "outcome": "ok"}
        handled_before = len(statsd.named(catalog.MESSAGES_HANDLED.name, **handled))
        await _publish_again(bus_settings, sent, request.partition_key())
        again = await collect(
            bus_settings,
            topics.MODEL_TRAINED,
            lambda e: e.correlation_id == request.job_id,
            count=2,
            timeout_s=60,
        )
        assert again[1].event_id == again[0].event_id and again[1].open_as(ModelTrained) == event
        assert sorted(p.name for p in (tmp_path / "scratch").rglob("result.json")) == runs_before
        assert "answering from its record" in worker.log()
        # the redelivery is counted as handled; no run started for it (no new result.json above)
        statsd.wait_for(
            lambda: len(statsd.named(catalog.MESSAGES_HANDLED.name, **handled)) > handled_before,
            10,
            "the redelivery handled",
        )

        assert http_status(f"{worker.url}/ready") == 200
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(20) in (0, -signal.SIGTERM), worker.log()


def _assert_stage_durations(statsd: StatsdCapture, trials: list[dict[str, Any]], group: str) -> None:
    """Each run's four stage times reach DogStatsD as the run reported them (seconds -> ms).

    A fresh consumer group reads the train topic from its start, so runs of earlier tests' requests may
    add lines too: each of this job's timings must be among them, once."""
    handled = {"group": group, "topic": topics.TRAIN_REQUESTED, "outcome": "ok"}
    statsd.wait_for(lambda: bool(statsd.named(catalog.MESSAGES_HANDLED.name, **handled)), 10, "handled")
    lines = statsd.named(catalog.STAGE_DURATION.name, kind="train", service="trainer")
    assert len(lines) == len(statsd.named(catalog.STAGE_DURATION.name)) >= 4 * len(trials)
    assert {line.kind for line in lines} == {"d"}
    for stage in ("load", "fit", "evaluate", "save"):
        seen = [line.value for line in lines if line.tags["stage"] == stage]
        assert all(value > 0 for value in seen)
        for trial in trials:
            reported = trial["timings"][stage] * 1000
            match = next((value for value in seen if value == pytest.approx(reported)), None)
            assert match is not None, (stage, reported, seen)
            seen.remove(match)


async def test_a_job_that_exhausts_its_memory_fails_alone_while_two_others_finish(
    bus_settings: BusSettings, tmp_path: Path, credit: tuple[Path, Path]
) -> None:
    raw, store = credit
    await ensure_topics(bus_settings)
    greedy = _config(raw, resources={"cpu": 1, "memory": "400Mi", "timeout_seconds": 120})
    greedy["spec"].pop("sweep")
    # ~75k polynomial terms of 6 numeric features for each of ~1,400 rows: 860 MB at once, over 400Mi
    greedy["spec"]["pipeline"]["steps"][0]["transformers"][0] = {
        "name": "numeric",
        "import": "sklearn.preprocessing.PolynomialFeatures",
        "params": {"degree": 16},
        "columns": [
            "age",
            "income",
            "utilisation",
            "n_open_accounts",
            "n_late_payments_90d",
            "months_at_address",
        ],
    }
    modest = _config(raw)
    modest["spec"].pop("sweep")
    requests = [_request(greedy), _request(modest), _request(modest)]
    env = _env(tmp_path, store, PF_TRAINER_MAX_CONCURRENT_JOBS="3", PF_TRAINER_MAX_PARALLEL_RUNS="3")
    with running_worker("trainer", bus_settings, tmp_path, extra_env=env) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 90, "trainer /health", worker.log)
        await asyncio.gather(*(publish(bus_settings, r) for r in requests))
        ids = {r.job_id for r in requests}
        failed = await collect(
            bus_settings, topics.TRAINING_FAILED, lambda e: e.correlation_id in ids, count=1, timeout_s=120
        )
        trained = await collect(
            bus_settings, topics.MODEL_TRAINED, lambda e: e.correlation_id in ids, count=2, timeout_s=120
        )

        failure = failed[0].open_as(TrainingFailed)
        assert failure.job_id == requests[0].job_id
        assert (
            "memory" in failure.reason
            and "400Mi" in failure.reason
            and "spec.resources.memory" in failure.reason
        )
        assert {e.open_as(ModelTrained).job_id for e in trained} == {requests[1].job_id, requests[2].job_id}
        assert worker.process.poll() is None, worker.log()


@pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)
async def test_with_a_tracking_uri_every_trial_is_an_mlflow_run_tagged_with_the_registry_version(
    bus_settings: BusSettings, tmp_path: Path, credit: tuple[Path, Path]
) -> None:
    from mlflow.tracking import MlflowClient

    raw, store = credit
    await ensure_topics(bus_settings)
    config = _config(raw)
    config["spec"]["sweep"]["params"] = {"estimator.max_depth": [2, 3]}
    request = _request(config)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = _env(tmp_path, store, PF_TRAINER_MLFLOW_TRACKING_URI=uri)
    with running_worker("trainer", bus_settings, tmp_path, extra_env=env) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 90, "trainer /health", worker.log)
        await publish(bus_settings, request)
        trained = await collect(
            bus_settings,
            topics.MODEL_TRAINED,
            lambda e: e.correlation_id == request.job_id,
            count=1,
            timeout_s=120,
        )
        event = trained[0].open_as(ModelTrained)
        # what the registrar announces once the version exists
        await publish(
            bus_settings,
            ModelRegistered(
                job_id=request.job_id,
                model_name=request.model_name,
                feature_set=request.feature_set,
                version=7,
                artifact_uri="file:///registry/model.skops",
                sha256=event.artifact.sha256,
                status="candidate",
            ),
        )

        client = MlflowClient(tracking_uri=uri)

        def runs() -> list[Any]:
            experiments = client.search_experiments()
            ids = [e.experiment_id for e in experiments]
            return (
                list(client.search_runs(ids, filter_string=f"tags.`pfactory.job_id` = '{request.job_id}'"))
                if ids
                else []
            )

        wait_for(
            lambda: (
                len(runs()) == 3 and all(r.data.tags.get("pfactory.registry_version") == "7" for r in runs())
            ),
            60,
            "three MLflow runs (the job and its two trials) tagged with version 7",
            worker.log,
        )
        trials = {r.data.tags.get("pfactory.run_id"): r for r in runs() if r.data.tags.get("pfactory.run_id")}
        assert set(trials) == {"trial-000", "trial-001"}
        for trial in event.metrics["sweep"]["trials"]:
            run_id = trial["run_id"]
            assert trials[run_id].data.metrics["roc_auc"] == pytest.approx(trial["metrics"]["roc_auc"])
            assert trials[run_id].data.params["estimator.max_depth"] == str(
                trial["params"]["estimator.max_depth"]
            )
