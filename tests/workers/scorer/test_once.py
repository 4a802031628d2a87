"""``python -m pfactory.scorer.once`` as a real process (what a KubernetesPodOperator's pod runs): it scores a
registered credit model's day from the worker's environment, or exits non-zero saying what, where and how to fix."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, JobStatus, JobStatusChanged, ScoringCompleted
from pfactory.features.reader import FeatureReader
from pfactory.registry.layout import VersionLayout
from pfactory.scorer import once
from pfactory.scorer.batch import PREDICTIONS_FILE, predictions_path
from tests.workers.scorer.credit_model import MODEL_NAME, NOT_INPUTS, PAIR, CreditModel, fit_and_register
from tests.workers.support import collect
from tests.workers.trainer.credit_data import FEATURE_SET, write_credit_store

START = dt.date(2024, 1, 1)
DAYS = 2
ROWS = 150


@dataclass(frozen=True)
class Ran:
    """What one run of the entrypoint did."""

    code: int
    stdout: str
    stderr: str

    @property
    def document(self) -> dict[str, Any]:
        """The JSON line it printed last."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no output; stderr:\n{self.stderr}"
        found = json.loads(lines[-1])
        assert isinstance(found, dict)
        return found


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CreditModel]:
    root = tmp_path_factory.mktemp("once")
    raw, store = write_credit_store(root, start=START, days=DAYS, applicants_per_day=ROWS)
    return store, fit_and_register(raw, store, root / "registry", START, DAYS)


def run_once(registry: Path, store: Path, *args: str, env: Mapping[str, str] | None = None) -> Ran:
    """The entrypoint in its own process, with the worker's environment variables and nothing else of ours."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PF_")}
    environment.update(
        {"PF_REGISTRY_DATA_DIR": str(registry), "PF_SCORER_STORE_ROOT": str(store), **(env or {})}
    )
    done = subprocess.run(
        [sys.executable, "-m", "pfactory.scorer.once", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def _day_file(store: Path, ds: dt.date, version: int = 1) -> Path:
    return store / predictions_path(MODEL_NAME, version, ds) / PREDICTIONS_FILE


def test_a_day_is_scored_and_reported(credit: tuple[Path, CreditModel]) -> None:
    store, model = credit
    ds = START + dt.timedelta(days=1)
    assert not _day_file(store, ds).exists()

    ran = run_once(
        model.registry_dir,
        store,
        f"--model={MODEL_NAME}",
        f"--feature-set={FEATURE_SET}@1",
        "--version=1",
        f"--ds={ds}",
    )

    assert ran.code == 0, ran.stderr
    written = pq.read_table(_day_file(store, ds))
    assert written.num_rows == ROWS
    assert written.column_names == ["applicant_id", "score", "label", "version", "ds"]
    document = ran.document
    assert document["status"] == "succeeded" and document["rows"] == ROWS
    assert document["version"] == 1 and document["ds"] == ds.isoformat()
    assert document["predictions_uri"] == f"{store.as_uri()}/{predictions_path(MODEL_NAME, 1, ds)}"
    # the drift report the worker publishes: one PSI per input and the score's, against the model's threshold
    inputs = set(FeatureReader(str(store)).read(FEATURE_SET, "1", [ds]).column_names) - NOT_INPUTS
    assert document["drift_threshold"] == 0.2
    assert set(document["drift"]) == inputs | {"score"}
    assert all(psi >= 0 for psi in document["drift"].values())
    assert document["published"] is False
    summary = ran.stdout.splitlines()[0]
    assert summary.startswith(f"scored {MODEL_NAME} v1 for {ds}: {ROWS} rows in ")
    assert "drift: " in ran.stdout


def test_a_missing_day_fails_with_advice_and_writes_nothing(
    credit: tuple[Path, CreditModel], tmp_path: Path
) -> None:
    store, model = credit
    missing = START + dt.timedelta(days=5)
    termination_log = tmp_path / "termination-log"

    ran = run_once(
        model.registry_dir,
        store,
        f"--model={MODEL_NAME}",
        "--version=1",
        f"--ds={missing}",
        f"--termination-log={termination_log}",
    )

    assert ran.code == 1, ran.stdout
    partition = f"feature_set={FEATURE_SET}/version=1/ds={missing}"
    assert (
        f"\nerror: could not score {MODEL_NAME} v1 for {missing}: the feature partition " in f"\n{ran.stderr}"
    )
    assert partition in ran.stderr and "is missing" in ran.stderr  # what
    assert f"where: the feature store and predictions under {store}" in ran.stderr  # where
    assert (
        f"materialise that day first: pfactory submit <{FEATURE_SET} feature set config>" in ran.stderr
    )  # fix
    assert not _day_file(store, missing).parent.exists()
    document = ran.document
    assert document["status"] == "failed" and document["version"] == 1
    assert "is missing" in document["reason"] and document["error"] in ran.stderr
    # Kubernetes' termination message (which KubernetesPodOperator quotes in the task's failure)
    assert termination_log.read_text() == document["error"]


def run_in_process(
    monkeypatch: pytest.MonkeyPatch, registry: Path, store: Path, *args: str
) -> tuple[int, str, str]:
    """``main`` in this process (scikit-learn is imported already): exit code, stdout, stderr."""
    monkeypatch.setenv("PF_REGISTRY_DATA_DIR", str(registry))
    monkeypatch.setenv("PF_SCORER_STORE_ROOT", str(store))
    out, err = io.StringIO(), io.StringIO()
    code = once.main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_an_unknown_version_names_what_the_registry_holds(
    credit: tuple[Path, CreditModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, model = credit
    code, out, err = run_in_process(
        monkeypatch, model.registry_dir, store, f"--model={MODEL_NAME}", "--version=9", f"--ds={START}"
    )

    assert code == 1
    assert f"{PAIR} has no version 9; it has versions 1 (live" in err
    assert f"where: the embedded registry at {model.registry_dir.resolve()} (PF_REGISTRY_DATA_DIR)" in err
    assert "fix: check --model, --feature-set and --version/--alias" in err
    assert json.loads(out.splitlines()[-1])["status"] == "failed"


def test_an_artifact_that_does_not_match_its_sha256_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, store = write_credit_store(tmp_path, start=START, days=1, applicants_per_day=60)
    model = fit_and_register(raw, store, tmp_path / "registry", START, 1)
    artifact = model.registry_dir / "artifacts" / VersionLayout(PAIR, 1).model
    assert artifact.is_file(), sorted(p.name for p in artifact.parent.iterdir())
    artifact.write_bytes(artifact.read_bytes() + b"tampered")

    code, _, err = run_in_process(
        monkeypatch, model.registry_dir, store, f"--model={MODEL_NAME}", "--version=1", f"--ds={START}"
    )

    assert code == 1
    assert "sha256 mismatch" in err
    assert f"where: version 1's artifact in the embedded registry at {model.registry_dir.resolve()}" in err
    assert "fix: the stored model could not be loaded as registered" in err
    assert not _day_file(store, START).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model=m", "--ds=2024-13-01"], "'2024-13-01' is not a day in YYYY-MM-DD form"),
        (["--model=m", "--ds=2024-01-01", "--version=0"], "'0' is not a version number"),
        (["--model=m", "--ds=2024-01-01", "--feature-set=credit"], "'credit' is not NAME@VERSION"),
        (["--model=m", "--ds=2024-01-01", "--version=1", "--alias=champion"], "not allowed with argument"),
        (["--ds=2024-01-01"], "the following arguments are required: --model"),
    ],
)
def test_bad_arguments_exit_2_with_usage(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        once.main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: python -m pfactory.scorer.once" in err


def test_invalid_settings_exit_2_naming_them(tmp_path: Path) -> None:
    ran = run_once(
        tmp_path / "registry",
        tmp_path / "store",
        "--model=m",
        "--ds=2024-01-01",
        env={"PF_SCORER_BATCH_ROWS": "0"},
    )
    assert ran.code == 2
    assert "the scorer's settings (PF_SCORER_*, PF_REGISTRY_*, PF_BUS_*) are invalid" in ran.stderr
    assert "batch_rows" in ran.stderr
    assert ran.document["status"] == "failed"


@pytest.mark.integration
def test_publish_sends_the_worker_events_under_ids_a_retry_repeats(
    credit: tuple[Path, CreditModel], bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, model = credit
    asyncio.run(ensure_topics(bus_settings))
    monkeypatch.setenv("PF_BUS_BOOTSTRAP_SERVERS", bus_settings.bootstrap_servers)
    job_id = f"pod-{uuid.uuid4().hex[:8]}"
    ds = START + dt.timedelta(days=1)

    code, out, err = run_in_process(
        monkeypatch,
        model.registry_dir,
        store,
        f"--model={MODEL_NAME}",
        f"--ds={ds}",
        f"--job-id={job_id}",
        "--publish",
    )

    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["published"] is True

    def ours(envelope: Envelope) -> bool:
        return envelope.payload.get("job_id") == job_id

    [completed] = asyncio.run(collect(bus_settings, topics.SCORING_COMPLETED, ours, count=1, timeout_s=20))
    event = completed.open_as(ScoringCompleted)
    assert (event.model_name, event.version, event.ds, event.rows) == (MODEL_NAME, 1, ds, ROWS)
    assert event.predictions_uri == f"{store.as_uri()}/{predictions_path(MODEL_NAME, 1, ds)}"
    assert completed.producer == "scorer"
    assert completed.event_id == str(uuid.uuid5(uuid.NAMESPACE_URL, f"pf:scorer/{job_id}/completed"))
    statuses = asyncio.run(collect(bus_settings, topics.JOB_STATUS, ours, count=3, timeout_s=20))
    assert [s.open_as(JobStatusChanged).status for s in statuses] == [
        JobStatus.RUNNING,
        JobStatus.RUNNING,
        JobStatus.SUCCEEDED,
    ]
