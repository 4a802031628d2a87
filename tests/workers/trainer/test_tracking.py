"""MLflow tracking against a real local MLflow store (SQLite in tmp_path): runs, nesting, idempotency."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from pydantic import ValidationError

from pfactory.trainer.jobspec import RunResult, Timings
from pfactory.trainer.tracking import MlflowSettings, MlflowTracker, TrackingError, TrialRecord

pytestmark = pytest.mark.filterwarnings(
    # mlflow 3.17's SQL store maps a relationship with lazy="noload", which SQLAlchemy 2.1 deprecates;
    # it is raised once when mlflow imports its store, nothing we call can avoid it
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)

JOB = "job-0001"
MODEL = "credit-default"
CONFIG = {
    "kind": "Model",
    "spec": {
        "pipeline": {
            "estimator": {
                "import": "sklearn.linear_model.LogisticRegression",
                "params": {"C": 1.0, "max_iter": 200, "class_weight": {"0": 1, "1": 5}},
            }
        }
    },
}
LINEAGE = {
    "feature_set_version": "1",
    "row_counts": {"train": 800, "test": 200},
    "partitions": ["features/feature_set=credit-features/version=1/ds=2024-06-30"],
}


def _trials() -> list[TrialRecord]:
    def auc(value: float) -> dict[str, Any]:
        return {"value": value, "ci_low": value - 0.03, "ci_high": value + 0.03}

    return [
        TrialRecord(
            "trial-000",
            {"estimator.C": 0.1},
            {"roc_auc": auc(0.77), "log_loss": 0.5, "calibration": {"ece": 0.02, "curve": []}},
            duration_s=1.25,
        ),
        TrialRecord("trial-001", {"estimator.C": 10.0}, {"roc_auc": auc(0.81)}, duration_s=2.0),
        TrialRecord(
            "trial-002",
            {"estimator.C": 100.0},
            {},
            status="failed",
            reason="fit did not converge",
            duration_s=3,
        ),
    ]


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def tracker(uri: str) -> MlflowTracker:
    return MlflowTracker(MlflowSettings(tracking_uri=uri, tags={"team": "risk"}))


def _log(
    tracker: MlflowTracker, job_id: str = JOB, trials: list[TrialRecord] | None = None
) -> dict[str, str]:
    return tracker.log_job(
        job_id,
        MODEL,
        "credit-features@1",
        trials if trials is not None else _trials(),
        ["trial-001"],
        LINEAGE,
        config=CONFIG,
    )


def _runs(uri: str, job_id: str = JOB) -> dict[str, Run]:
    """The job's runs by role: 'job' for the parent, the trial's run id for the others."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"pfactory/{MODEL}")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`pfactory.job_id` = '{job_id}'"
    )
    return {r.data.tags.get("pfactory.run_id", r.data.tags["pfactory.role"]): r for r in runs}


def test_a_job_is_a_parent_run_with_one_nested_run_per_trial(tracker: MlflowTracker, uri: str) -> None:
    logged = _log(tracker)

    runs = _runs(uri)
    assert set(runs) == {"job", "trial-000", "trial-001", "trial-002"}
    assert logged == {name: run.info.run_id for name, run in runs.items() if name != "job"}
    parent = runs["job"]
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"{MODEL} job {JOB}"
    assert parent.data.params["lineage.row_counts.train"] == "800"
    assert parent.data.tags["pfactory.selected"] == "trial-001"
    for name in ("trial-000", "trial-001", "trial-002"):
        tags = runs[name].data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id and runs[name].info.run_name == name
        assert (tags["pfactory.job_id"], tags["pfactory.run_id"], tags["pfactory.model"]) == (
            JOB,
            name,
            MODEL,
        )
        assert tags["pfactory.feature_set"] == "credit-features@1" and tags["team"] == "risk"
        assert tags["pfactory.registry_version"] == "pending"
        assert tags["pfactory.selected"] == ("true" if name == "trial-001" else "false")

    best = runs["trial-001"].data
    assert best.params["estimator.C"] == "10.0"  # the sweep's value wins over the configured 1.0
    assert (
        best.params["estimator.max_iter"] == "200"
        and best.params["estimator.class_weight"] == '{"0": 1, "1": 5}'
    )
    assert best.params["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert best.metrics["roc_auc"] == 0.81 and best.metrics["roc_auc_ci_low"] == pytest.approx(0.78)
    assert best.metrics["roc_auc_ci_high"] == pytest.approx(0.84) and best.metrics["duration_s"] == 2.0
    first = runs["trial-000"]
    assert first.data.metrics["log_loss"] == 0.5 and not any("calibration" in m for m in first.data.metrics)
    assert first.info.end_time - first.info.start_time == 1250  # the trial's own duration
    failed = runs["trial-002"]
    assert failed.info.status == "FAILED" and failed.data.tags["pfactory.reason"] == "fit did not converge"
    assert failed.data.tags["pfactory.status"] == "failed" and "roc_auc" not in failed.data.metrics


def test_a_redelivered_job_creates_no_second_set_of_runs(tracker: MlflowTracker, uri: str) -> None:
    first = _log(tracker)

    again = _log(MlflowTracker(tracker.settings))  # a restarted worker, nothing cached

    assert again == first and len(_runs(uri)) == 4
    other = _log(tracker, job_id="job-0002")
    assert set(other.values()).isdisjoint(first.values()) and len(_runs(uri, "job-0002")) == 4


class _CrashingTracker(MlflowTracker):
    """Dies after ``survive`` batches, like a worker killed while logging."""

    def __init__(self, settings: MlflowSettings, survive: int) -> None:
        super().__init__(settings)
        self.left = survive

    def _log(self, run_id: str, params: list[tuple[str, str]], metrics: list[tuple[str, float, int]]) -> None:
        if self.left == 0:
            raise SystemExit("killed while logging")
        self.left -= 1
        super()._log(run_id, params, metrics)


def test_a_job_killed_while_logging_is_completed_without_duplicates(tracker: MlflowTracker, uri: str) -> None:
    # parent lineage, trial-000, then killed inside trial-001 (its run exists, half-logged, RUNNING)
    with pytest.raises(SystemExit):
        _log(_CrashingTracker(tracker.settings, survive=2))
    half = _runs(uri)
    assert half["job"].info.status == "RUNNING" and half["trial-000"].info.status == "FINISHED"
    assert half["trial-001"].info.status == "RUNNING" and "trial-002" not in half

    logged = _log(tracker)

    runs = _runs(uri)
    assert (
        set(runs) == {"job", "trial-000", "trial-001", "trial-002"} and runs["job"].info.status == "FINISHED"
    )
    assert runs["job"].info.run_id == half["job"].info.run_id  # the parent is reused
    assert logged["trial-000"] == half["trial-000"].info.run_id  # a finished trial is kept
    assert logged["trial-001"] != half["trial-001"].info.run_id  # the half-logged one is logged again
    assert runs["trial-001"].data.metrics["roc_auc"] == 0.81
    assert runs["job"].data.params["lineage.row_counts.train"] == "800"


def test_registration_tags_every_run_of_the_job_with_its_version(tracker: MlflowTracker, uri: str) -> None:
    _log(tracker)
    _log(tracker, job_id="job-0002")

    tagged = MlflowTracker(tracker.settings).record_registration(JOB, 7)

    assert tagged == 4
    assert {r.data.tags["pfactory.registry_version"] for r in _runs(uri).values()} == {"7"}
    assert {r.data.tags["pfactory.registry_version"] for r in _runs(uri, "job-0002").values()} == {"pending"}
    assert tracker.record_registration("job-unknown", 3) == 0


def test_an_existing_experiment_is_reused_and_a_custom_template_names_it(uri: str) -> None:
    client = MlflowClient(tracking_uri=uri)
    existing = client.create_experiment("team-risk/credit-default")
    tracker = MlflowTracker(MlflowSettings(tracking_uri=uri, experiment="team-risk/{model_name}"))

    _log(tracker)

    runs = client.search_runs([existing], filter_string=f"tags.`pfactory.job_id` = '{JOB}'")
    assert len(runs) == 4
    assert tracker.record_registration(JOB, 2) == 4  # found through the experiment's managed tag


def test_a_deleted_experiment_is_a_clear_error(tracker: MlflowTracker, uri: str) -> None:
    client = MlflowClient(tracking_uri=uri)
    client.delete_experiment(client.create_experiment(f"pfactory/{MODEL}"))

    with pytest.raises(TrackingError, match=r"is deleted; restore it .* or set PF_TRAINER_MLFLOW_EXPERIMENT"):
        _log(tracker)


def test_an_unusable_store_is_a_tracking_error_naming_it_without_its_password(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    tracker = MlflowTracker(MlflowSettings(tracking_uri=f"sqlite:///{blocked}/mlflow.db"))

    with pytest.raises(TrackingError, match="PF_TRAINER_MLFLOW_TRACKING_URI") as raised:
        _log(tracker)
    assert str(blocked) in str(raised.value)

    secret = MlflowTracker(MlflowSettings(tracking_uri="postgresql://pf:s3cret@db.invalid/mlflow"))
    message = str(secret._error("logging job j", RuntimeError("refused")))
    assert "s3cret" not in message and "postgresql://pf:***@db.invalid/mlflow" in message


def test_with_tracking_off_nothing_is_logged_and_mlflow_is_never_imported(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pfactory.trainer.tracking import MlflowSettings, MlflowTracker, TrialRecord
        tracker = MlflowTracker(MlflowSettings())
        assert not tracker.enabled
        assert tracker.log_job("j", "m", "fs@1", [TrialRecord("trial-000")], ["trial-000"], {}) == {}
        assert tracker.record_registration("j", 1) == 0
        print(sorted(name for name in sys.modules if name.split(".")[0] == "mlflow"))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PF_TRAINER_MLFLOW_* from the outside

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []  # no mlruns/ or database appeared


def test_settings_come_from_the_environment_and_refuse_a_bad_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PF_TRAINER_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("PF_TRAINER_MLFLOW_TAGS", '{"team": "risk"}')

    settings = MlflowSettings()

    assert (settings.tracking_uri, settings.tags, settings.experiment) == (
        "http://mlflow:5000",
        {"team": "risk"},
        "pfactory/{model_name}",
    )
    monkeypatch.setenv("PF_TRAINER_MLFLOW_TRACKING_URI", "  ")
    assert MlflowSettings().tracking_uri is None  # blank means off
    with pytest.raises(ValidationError, match=r"may use only the \{model_name\} placeholder"):
        MlflowSettings(experiment="pfactory/{model}")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        MlflowSettings(tracking_url="http://x")  # type: ignore[call-arg]


def test_a_run_result_becomes_a_trial_record() -> None:
    result = RunResult(
        job_id=JOB,
        run_id="trial-004",
        ok=False,
        stage="fit",
        reason="out of memory",
        params={"estimator.max_depth": 5},
        metrics={"roc_auc": {"value": 0.7}},
        timings=Timings(load=0.5, fit=1.0),
    )

    record = TrialRecord.from_result(result)

    assert (record.run_id, record.status, record.reason, record.duration_s) == (
        "trial-004",
        "failed",
        "out of memory",
        1.5,
    )
    assert record.params == {"estimator.max_depth": 5} and isinstance(record.metrics, Mapping)
