"""One training run in this process (``job.execute``), on the example credit features.

The isolation around it (fork server, pods) has its own tests; here the run's outputs are checked:
the model loads with trusted types and scores like the fitted one, metrics carry bootstrap
intervals, the injected age-band bias shows in the fairness report, and every failure ends as a
``result.json`` with the stage and a reason that says what to do.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pfactory.features.drift import psi
from pfactory.registry.serialization import load_model
from pfactory.trainer import job, runfiles
from pfactory.trainer.jobspec import MODEL_FILE, REFERENCE_FILE, RunSpec, StoreLocation
from tests.workers.trainer.credit_data import credit_config, credit_features, write_credit_store

START = dt.date(2024, 1, 1)
DAYS = 8


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_credit_store(
        tmp_path_factory.mktemp("credit"), start=START, days=DAYS, applicants_per_day=400
    )


def _spec(tmp_path: Path, store: Path, config: dict[str, Any], **fields: Any) -> RunSpec:
    run_id = fields.pop("run_id", "trial-000")
    return RunSpec(
        job_id="job-1",
        run_id=run_id,
        config=config,
        feature_store=StoreLocation(root=str(store)),
        output_uri=str(tmp_path / run_id),
        **fields,
    )


def _config(raw: Path, **spec: Any) -> dict[str, Any]:
    return credit_config(raw, start=START, end=START + dt.timedelta(days=DAYS - 1), **spec)


def test_a_fit_run_writes_a_loadable_model_metrics_with_intervals_fairness_and_a_reference(
    credit: tuple[Path, Path], tmp_path: Path
) -> None:
    raw, store = credit
    spec = _spec(tmp_path, store, _config(raw), params={"estimator.max_depth": 3, "estimator.max_iter": 50})
    result = job.execute(spec)

    assert result.ok, result.reason
    auc = result.metrics["roc_auc"]
    assert 0.6 < auc["value"] < 1 and auc["ci_low"] < auc["value"] < auc["ci_high"]
    assert {"pr_auc", "log_loss", "brier_score", "ks_statistic"} <= set(result.metrics)
    assert result.metrics["calibration"]["curve"], "a calibration curve"
    # the generator flips 18-24s' labels: the model learns it and the report shows it; gender is the control
    age, gender = result.fairness["age_band"], result.fairness["gender"]
    assert age["demographic_parity_difference"] > 0.3 > gender["demographic_parity_difference"]
    assert result.lineage["row_counts"]["train"] + result.lineage["row_counts"]["test"] == DAYS * 400
    assert result.framework["framework"] == "scikit-learn" and result.params == spec.params

    data = runfiles.read_bytes(spec.output_uri, MODEL_FILE)
    model = load_model(data, expected_sha256=result.sha256 or "", version_label="trial-000")
    assert model.get_params()["estimator__max_depth"] == 3
    today = credit_features(raw, START).to_pandas()
    scores = model.predict_proba(today)[:, 1]
    assert scores.shape == (400,) and 0 < scores.mean() < 1

    reference = json.loads(runfiles.read_bytes(spec.output_uri, REFERENCE_FILE))
    assert {"age", "income", "employment_status", "age_band"} <= set(reference["features"])
    # the event time is the same on every row of a day: a join key, never an input to drift or score on
    signature = {column["name"] for column in reference["signature"]}
    assert "event_ts" not in reference["features"] and "event_ts" not in signature
    assert {"applicant_id", "ds"}.isdisjoint(signature) and "age" in signature
    inputs_only = today.drop(columns=["event_ts", "applicant_id"])  # what an online caller sends
    assert model.predict_proba(inputs_only)[:, 1].tolist() == scores.tolist()
    assert psi(reference["features"]["income"], today["income"]) < 0.2  # the same population
    assert psi(reference["score"], scores) < 0.2


def test_an_ensemble_run_combines_the_trials_it_is_given(credit: tuple[Path, Path], tmp_path: Path) -> None:
    raw, store = credit
    config = _config(raw)
    config["spec"]["sweep"]["selection"] = {"mode": "top_k_ensemble", "k": 2, "ensemble": "soft_voting"}
    members = []
    for index, depth in enumerate((2, 4)):
        member = _spec(
            tmp_path, store, config, run_id=f"trial-00{index}", params={"estimator.max_depth": depth}
        )
        result = job.execute(member)
        assert result.ok, result.reason
        runfiles.write_result(member.output_uri, result)
        members.append(member.output_uri)

    result = job.execute(_spec(tmp_path, store, config, run_id="ensemble", kind="ensemble", inputs=members))

    assert result.ok, result.reason
    model = load_model(
        runfiles.read_bytes(str(tmp_path / "ensemble"), MODEL_FILE),
        expected_sha256=result.sha256 or "",
        version_label="ensemble",
    )
    assert type(model).__name__ == "VotingClassifier" and len(model.estimators_) == 2
    assert [m.get_params()["estimator__max_depth"] for m in model.estimators_] == [2, 4]
    assert result.metrics["roc_auc"]["value"] > 0.6


def test_missing_features_fail_at_load_with_the_days_and_the_command_to_materialise_them(
    credit: tuple[Path, Path], tmp_path: Path
) -> None:
    raw, _ = credit
    result = job.execute(_spec(tmp_path, tmp_path / "empty-store", _config(raw)))
    assert not result.ok and result.stage == "load"
    assert "no validated partitions of credit-features" in (result.reason or "")
    assert "pfactory submit" in (result.reason or "")
    assert not (tmp_path / "trial-000" / MODEL_FILE).exists()


def test_a_fit_that_raises_names_the_estimator_and_what_to_check(
    credit: tuple[Path, Path], tmp_path: Path
) -> None:
    raw, store = credit
    config = _config(raw)
    # LogisticRegression cannot take the NaNs the scaler passes through (debt_to_income of zero incomes)
    config["spec"]["pipeline"]["estimator"] = {"import": "sklearn.linear_model.LogisticRegression"}
    config["spec"].pop("sweep")
    result = job.execute(_spec(tmp_path, store, config))
    assert not result.ok and result.stage == "fit"
    assert "sklearn.linear_model.LogisticRegression" in (result.reason or "")
    assert "NaN" in (result.reason or "") and "imputer" in (result.reason or "")


def test_an_invalid_config_fails_before_reading_anything(credit: tuple[Path, Path], tmp_path: Path) -> None:
    raw, store = credit
    config = _config(raw)
    config["spec"]["pipeline"]["estimator"] = {"import": "os.system"}
    result = job.execute(_spec(tmp_path, store, config))
    assert not result.ok and result.stage == "load"
    assert "os.system" in (result.reason or "") and "allow" in (result.reason or "")


def test_the_entrypoint_reads_the_spec_and_writes_result_json_last(
    credit: tuple[Path, Path], tmp_path: Path
) -> None:
    raw, store = credit
    spec = _spec(tmp_path, store, _config(raw), params={"estimator.max_iter": 20})
    spec_uri = runfiles.write_spec(spec)
    assert job.main(["run-job", spec_uri]) == 0
    result = runfiles.read_result(spec.output_uri)
    assert result.ok and result.sha256 and (tmp_path / "trial-000" / MODEL_FILE).exists()
    assert job.main(["run-job"]) == 2


def test_the_warm_up_runs_a_whole_job_and_leaves_no_files_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch, cwd = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where its temporary folder goes
    monkeypatch.chdir(cwd)

    assert job.warm_up()  # config, partitions and labels, join, fit, evaluation, model and result files
    assert not list(scratch.iterdir()) and not list(cwd.iterdir())


def test_the_import_allowlist_follows_the_environment_of_each_run(
    credit: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, store = credit
    config = _config(raw)
    config["spec"]["pipeline"]["estimator"] = {"import": "mylab.models.Scorecard"}
    spec = _spec(tmp_path, store, config)

    with pytest.raises(job.RunFailed, match=r"mylab\.models\.Scorecard"):
        job._read_config(spec)  # not allowed by default
    monkeypatch.setenv("PF_IMPORTS_EXTRA_PREFIXES", '["mylab."]')
    model_spec, allowlist = job._read_config(spec)
    assert allowlist.allows("mylab.models.Scorecard")
    assert model_spec.pipeline.estimator.import_path == "mylab.models.Scorecard"
    monkeypatch.delenv("PF_IMPORTS_EXTRA_PREFIXES")
    with pytest.raises(job.RunFailed, match=r"mylab\.models\.Scorecard"):
        job._read_config(spec)  # a cached allowlist never outlives the settings it was built for
