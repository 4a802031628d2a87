"""The run entrypoint: ``python -m pfactory.trainer run-job SPEC_URI`` (process and pod backends alike).

Reads a :class:`~pfactory.trainer.jobspec.RunSpec`, loads the point-in-time training set, assembles and
fits the pipeline (or the ensemble of selected trials), evaluates it on the holdout, and writes
``model.skops``, ``reference.json`` and, last, ``result.json`` into the spec's output folder (see
:mod:`pfactory.trainer.jobspec`). Every failure becomes a ``result.json`` with the stage it happened in
and a reason a data scientist can act on; only a kill from outside leaves no result.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.parquet as pq

from pfactory.contracts.configs.metrics import TASK_METRICS, FairnessMetric, Task
from pfactory.contracts.configs.model import ModelConfig, ModelSpec
from pfactory.contracts.imports import ImportAllowlist, default_allowlist
from pfactory.contracts.issues import ConfigError
from pfactory.contracts.loader import load_config_dict
from pfactory.features.drift import build_reference
from pfactory.features.layout import DATA_FILE, GOOD_MARKER, partition_path
from pfactory.features.reader import FeatureReader
from pfactory.registry.serialization import dump_model, sha256_hex
from pfactory.telemetry.logs import configure_logging
from pfactory.telemetry.settings import TelemetrySettings
from pfactory.trainer import runfiles
from pfactory.trainer.adapters.forkserver import thread_pools
from pfactory.trainer.assembly import (
    AssemblyError,
    InterfaceError,
    build_pipeline,
    check_interface,
    framework_info,
    warm_caches,
)
from pfactory.trainer.dataset import TrainingDataError, TrainingSet, build_training_set
from pfactory.trainer.evaluation import Prediction, calibration, evaluate
from pfactory.trainer.fairness import fairness_report
from pfactory.trainer.jobspec import MODEL_FILE, REFERENCE_FILE, RunResult, RunSpec, StoreLocation, Timings
from pfactory.trainer.sweep import build_ensemble

log = logging.getLogger("pfactory.trainer.job")

MAX_REASON = 2000


class RunFailed(Exception):
    """A run stopped at ``stage`` for ``reason`` (already phrased for the user)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def main(argv: list[str]) -> int:
    """``run-job SPEC_URI``: execute one run; 0 when it succeeded, 1 when it failed with a result."""
    if len(argv) != 2 or argv[0] != "run-job":
        print("usage: python -m pfactory.trainer run-job SPEC_URI", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:  # as basicConfig did: a caller's own logging set-up stays
        configure_logging(TelemetrySettings(), "trainer", logging.INFO)  # text or JSON, like the trainer's
    spec = runfiles.read_spec(argv[1])
    result = execute(spec)
    runfiles.write_result(spec.output_uri, result, endpoint_url=spec.feature_store.endpoint_url)
    if not result.ok:
        print(
            f"run {spec.run_id} of job {spec.job_id} failed at {result.stage}: {result.reason}",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


@contextmanager
def _phase(timings: Timings, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        setattr(timings, name, getattr(timings, name) + time.perf_counter() - started)


def execute(spec: RunSpec) -> RunResult:
    """Run one training run in this process and return its result (nothing raised for user errors)."""
    timings = Timings()
    stage = "load"
    try:
        return _execute(spec, timings)
    except RunFailed as failure:
        stage, reason = failure.stage, failure.reason
    except MemoryError:
        stage, reason = "fit", _memory_reason(spec)
    except Exception as error:  # anything unexpected still ends as a result the user can read
        log.error("run %s/%s failed unexpectedly:\n%s", spec.job_id, spec.run_id, traceback.format_exc())
        reason = f"unexpected {type(error).__name__}: {error}"
    return RunResult(
        job_id=spec.job_id,
        run_id=spec.run_id,
        ok=False,
        stage=stage,
        reason=reason[:MAX_REASON],
        params=spec.params,
        timings=timings,
    )


def _memory_reason(spec: RunSpec) -> str:
    memory = spec.config.get("spec", {}).get("resources", {}).get("memory", "the default")
    return (
        f"the run ran out of memory (limit {memory}); raise spec.resources.memory, or train on a shorter "
        "window or fewer features"
    )


def _execute(spec: RunSpec, timings: Timings) -> RunResult:
    with _phase(timings, "load"):
        model_spec, allowlist = _read_config(spec)
        training = _load_training_set(spec, model_spec)
    with _phase(timings, "fit"):
        estimator = _assemble(spec, model_spec, allowlist)
        _fit(estimator, training, model_spec, spec.threads)
    with _phase(timings, "evaluate"):
        evaluation = _evaluate(estimator, training, model_spec)
    with _phase(timings, "save"):
        data = dump_model(estimator)
        endpoint = spec.feature_store.endpoint_url
        runfiles.write_bytes(spec.output_uri, MODEL_FILE, data, endpoint_url=endpoint)
        runfiles.write_bytes(
            spec.output_uri,
            REFERENCE_FILE,
            json.dumps(evaluation.reference, allow_nan=False).encode(),
            endpoint_url=endpoint,
        )
    return RunResult(
        job_id=spec.job_id,
        run_id=spec.run_id,
        ok=True,
        stage="done",
        params=spec.params,
        metrics=evaluation.metrics,
        fairness=evaluation.fairness,
        lineage=training.lineage,
        framework=framework_info(estimator),
        timings=timings,
        sha256=sha256_hex(data),
        size_bytes=len(data),
    )


def _anchored(config: dict[str, Any], working_dir: str | None) -> dict[str, Any]:
    """The config with a relative local labels path read from ``working_dir`` (runs execute elsewhere)."""
    labels = config.get("spec", {}).get("labels", {})
    path = labels.get("path") if isinstance(labels, dict) else None
    if not working_dir or not isinstance(path, str) or "://" in path or path.startswith("/"):
        return config
    anchored: dict[str, Any] = json.loads(json.dumps(config))
    anchored["spec"]["labels"]["path"] = f"{working_dir.rstrip('/')}/{path}"
    return anchored


def _read_config(spec: RunSpec) -> tuple[ModelSpec, ImportAllowlist]:
    allowlist = _allowlist()
    try:
        config = load_config_dict(
            _anchored(spec.config, spec.working_dir), expect=ModelConfig, allowlist=allowlist
        )
    except ConfigError as error:
        raise RunFailed("load", f"the model config does not validate: {error}") from None
    return config.spec, allowlist


def _allowlist() -> ImportAllowlist:
    """The import allowlist of the ``PF_IMPORTS_*`` settings in the environment now (kept per process
    by :func:`~pfactory.contracts.imports.default_allowlist`, so a fork server builds it once)."""
    return default_allowlist()


def _load_training_set(spec: RunSpec, model_spec: ModelSpec) -> TrainingSet:

    reader = FeatureReader(
        spec.feature_store.root,
        endpoint_url=spec.feature_store.endpoint_url,
        region=spec.feature_store.region,
    )
    try:
        return build_training_set(model_spec, reader, labels_endpoint_url=spec.labels_endpoint_url)
    except TrainingDataError as error:
        raise RunFailed("load", str(error)) from None


def _assemble(spec: RunSpec, model_spec: ModelSpec, allowlist: ImportAllowlist) -> Any:

    try:
        if spec.kind == "ensemble":
            selection = model_spec.sweep.selection if model_spec.sweep else None
            if selection is None:
                raise RunFailed("assemble", "an ensemble run needs spec.sweep.selection in the config")
            members = [
                runfiles.read_result(uri, endpoint_url=spec.feature_store.endpoint_url) for uri in spec.inputs
            ]
            estimator = build_ensemble(
                model_spec,
                allowlist=allowlist,
                member_params=[member.params for member in members],
                method=selection.ensemble,
                names=[member.run_id.replace("-", "_") for member in members],
            )
        else:
            estimator = build_pipeline(model_spec, allowlist=allowlist, params=spec.params)
        check_interface(estimator, model_spec.task)
    except (AssemblyError, InterfaceError, ValueError) as error:
        raise RunFailed("assemble", str(error)) from None
    return estimator


def _fit(estimator: Any, training: TrainingSet, model_spec: ModelSpec, threads: int) -> None:

    try:
        with thread_pools().limit(limits=threads):
            estimator.fit(training.X_train, training.y_train)
    except MemoryError:
        raise
    except Exception as error:
        path = model_spec.pipeline.estimator.import_path
        raise RunFailed(
            "fit",
            f"fitting {path} failed: {type(error).__name__}: {error}. Check the estimator's params and that "
            "the selected columns suit every step (a step that cannot take text or missing values needs an "
            "encoder or imputer before it).",
        ) from None


class _Evaluation:
    def __init__(self, metrics: dict[str, Any], fairness: dict[str, Any], reference: dict[str, Any]) -> None:
        self.metrics = metrics
        self.fairness = fairness
        self.reference = reference


def _scores(estimator: Any, frame: pd.DataFrame, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """(scores, predicted labels): the positive-class probability for binary tasks."""
    if task is Task.REGRESSION:
        predicted = np.asarray(estimator.predict(frame), dtype=float)
        return predicted, predicted
    proba = np.asarray(estimator.predict_proba(frame), dtype=float)
    classes = np.asarray(estimator.classes_)
    labels = classes[np.argmax(proba, axis=1)]
    if task is Task.BINARY_CLASSIFICATION:
        positive = int(np.flatnonzero(classes == 1)[0]) if (classes == 1).any() else proba.shape[1] - 1
        return proba[:, positive], labels
    return proba, labels


def _evaluate(estimator: Any, training: TrainingSet, model_spec: ModelSpec) -> _Evaluation:

    task = model_spec.task
    # One predict over train + test rows: the test rows' scores for the metrics, all of them for the
    # score's drift reference (a pipeline's per-call overhead outweighs its per-row cost here).
    everything = pd.concat([training.X_train, training.X_test], ignore_index=True)
    all_scores, all_labels = _scores(estimator, everything, task)
    n_train = len(training.X_train)
    scores, labels = all_scores[n_train:], all_labels[n_train:]
    wanted = [model_spec.metrics.primary, *model_spec.metrics.report]
    metric_names = list(dict.fromkeys([*wanted, *model_spec.metrics.thresholds]))
    threshold = model_spec.fairness.decision_threshold if model_spec.fairness else 0.5
    prediction = Prediction(scores=scores, labels=labels, classes=getattr(estimator, "classes_", None))
    metrics: dict[str, Any] = evaluate(
        task,
        training.y_test,
        prediction,
        metric_names,
        resamples=model_spec.metrics.bootstrap_resamples,
        seed=model_spec.training.split.seed,
        threshold=threshold,
    )
    if task is Task.BINARY_CLASSIFICATION:
        metrics["calibration"] = calibration(training.y_test, scores)
    fairness: dict[str, Any] = {}
    if model_spec.fairness is not None and task is Task.BINARY_CLASSIFICATION:
        attributes = list(model_spec.fairness.protected_attributes)
        missing = [name for name in attributes if name not in training.X_test.columns]
        if missing:
            raise RunFailed(
                "evaluate",
                f"spec.fairness.protected_attributes names {missing}, which the feature set does not have; "
                f"its columns are {sorted(training.X_test.columns)}",
            )
        fairness = fairness_report(
            training.y_test,
            scores,
            training.X_test[attributes],
            list(model_spec.fairness.metrics),
            threshold=threshold,
            min_group_size=model_spec.fairness.min_group_size,
        )
    reference_scores = all_scores if np.ndim(all_scores) == 1 else np.max(all_scores, axis=1)
    reference = build_reference(everything, reference_scores)
    return _Evaluation(_finite(metrics), fairness, reference)


def _finite(value: Any) -> Any:
    """The document with NaN and infinities replaced by None, so it serialises as strict JSON."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def warm_up() -> bool:
    """Run a complete tiny job on synthetic data in a temporary folder, then remove the folder.

    Imports leave much to first use: the timezone table, pydantic validators, pyarrow's cast and
    compute kernels, pandas conversions, scikit-learn's parameter validation and pandas output, the
    metrics and fairness rates, skops. A fork server that has run a job once hands that state to every
    run it forks; a standby child that runs one more has the pages a run writes already copied (see
    ``adapters/forkserver.py``). The job goes through the run's own steps: the spec and result files,
    the config, the feature partitions and labels of a store in the materialiser's layout, the
    point-in-time join, fit, evaluation and the saved model. A failure only costs the warmth.

    Returns:
        Whether the job ran to the end (False: it failed, which is logged at debug level).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tempfile.TemporaryDirectory(prefix="pf-warm-up-") as folder:
                result = _warm_up(Path(folder))
    except Exception as error:  # warmth is an optimisation, never a reason not to serve
        log.debug("warm-up skipped: %r", error)
        return False
    if not result.ok:
        log.debug("warm-up run failed at %s: %s", result.stage, result.reason)
    return result.ok


def _warm_up(folder: Path) -> RunResult:
    numeric = ["a", "b"]
    config = {
        "apiVersion": "pfactory.io/v1",
        "kind": "Model",
        "metadata": {"name": "warm-up", "owner": "pfactory"},
        "spec": {
            "feature_set": {"name": "warm-up", "version": 1},
            "labels": {"path": "labels", "entity": "id", "date_column": "d", "label_column": "y"},
            "task": "binary_classification",
            "training": {"window": {"start": "2024-01-01", "end": "2024-01-02"}},
            "pipeline": {
                "steps": [
                    {"name": "impute", "import": "sklearn.impute.SimpleImputer", "columns": numeric},
                    {
                        "name": "prep",
                        "transformers": [
                            {
                                "name": "n",
                                "import": "sklearn.preprocessing.StandardScaler",
                                "columns": numeric,
                            },
                            {"name": "c", "import": "sklearn.preprocessing.OneHotEncoder", "columns": ["c"]},
                        ],
                    },
                ],
                "estimator": {"import": "sklearn.linear_model.LogisticRegression"},
            },
            "metrics": {
                "primary": "roc_auc",
                "report": sorted(TASK_METRICS[Task.BINARY_CLASSIFICATION]),
                "bootstrap_resamples": 5,
            },
            "fairness": {"protected_attributes": ["c"], "metrics": list(FairnessMetric)},
            "scoring": {"schedule": "0 6 * * *", "timezone": "UTC"},
            "card": {"intended_use": "warm-up", "contact": "pfactory"},
        },
    }
    rows = np.arange(32)
    days = [date(2024, 1, 1), date(2024, 1, 2)]
    for ds in days:  # one partition per day, in the materialiser's layout
        partition = folder / "store" / partition_path("warm-up", 1, ds)
        partition.mkdir(parents=True)
        features = {"id": [f"e{i}" for i in rows], "a": rows / 7.0, "b": rows % 5}
        features["c"] = np.where(rows % 3 == 0, "x", "y")
        pq.write_table(pa.table(features), partition / DATA_FILE)
        (partition / GOOD_MARKER).write_text(json.dumps({"sql_hashes": {"warm-up": "warm-up"}}))
    (folder / "labels").mkdir()
    labels = {"id": [f"e{i}" for i in rows] * 2, "d": [d for d in days for _ in rows], "y": [*rows % 2] * 2}
    pq.write_table(pa.table(labels), folder / "labels" / "part-0.parquet")
    spec = RunSpec(
        job_id="warm-up",
        run_id="warm-up",
        config=config,
        feature_store=StoreLocation(root=str(folder / "store")),
        working_dir=str(folder),
        output_uri=str(folder / "out"),
    )
    spec = runfiles.read_spec(runfiles.write_spec(spec))
    result = execute(spec)
    runfiles.write_result(spec.output_uri, result)
    return runfiles.read_result(spec.output_uri)


# A fork server imports this module once; runs forked from it start with package metadata read and
# the code of a run warm (see warm_up).
warm_caches()
warm_up()
