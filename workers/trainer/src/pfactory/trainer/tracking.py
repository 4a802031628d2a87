"""MLflow experiment tracking of training jobs (optional: ``pfactory-trainer[mlflow]``, off by default).

A job is one MLflow *parent* run; each trial is a nested run under it (``mlflow.parentRunId``)
with its parameters (the estimator's configured params overridden by the trial's sweep params),
metrics (``<m>``, ``<m>_ci_low``, ``<m>_ci_high``, ``duration_s``) and ``pfactory.*`` tags.
``pfactory.registry_version`` reads ``pending`` until :meth:`MlflowTracker.record_registration`.

Logging is idempotent per job: runs are found by their ``pfactory.job_id`` tag first, a finished
run is kept, a run left half-logged by a crash is deleted and logged again, and the parent is
closed last. mlflow is imported only when a tracking URI is configured, so the trainer runs
without it. The tracker is synchronous: call it from a worker thread.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, JsonValue, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.trainer.jobspec import RunResult

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger("pfactory.trainer.tracking")

PENDING = "pending"
MANAGED_TAG = "pfactory.managed"
"""Set on the experiments the tracker writes to, so a registration can find a job's runs."""
_DONE = frozenset({"FINISHED", "FAILED", "KILLED"})
_MAX_KEY, _MAX_PARAM, _MAX_TAG, _PARAMS_PER_BATCH, _METRICS_PER_BATCH = 250, 6000, 8000, 100, 1000
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


class TrackingError(RuntimeError):
    """Logging to MLflow failed; the message says where and what to check."""


class MlflowSettings(BaseSettings):
    """Where and how training jobs are tracked (env prefix ``PF_TRAINER_MLFLOW_``)."""

    model_config = SettingsConfigDict(env_prefix="PF_TRAINER_MLFLOW_", extra="forbid")

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (http(s)://server, sqlite:///path/mlflow.db); unset: tracking is off.",
    )
    experiment: str = Field(
        default="pfactory/{model_name}", description="Experiment name template; may use {model_name}."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags set on every run.")

    @field_validator("tracking_uri")
    @classmethod
    def _blank_is_off(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("experiment")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            name = value.format(model_name="m")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"PF_TRAINER_MLFLOW_EXPERIMENT {value!r} may use only the {{model_name}} placeholder "
                f"(e.g. 'pfactory/{{model_name}}'): {error}"
            ) from None
        if not name.strip():
            raise ValueError(
                "PF_TRAINER_MLFLOW_EXPERIMENT must name an experiment, e.g. 'pfactory/{model_name}'"
            )
        return value


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the tracker logs it."""

    run_id: str
    params: Mapping[str, JsonValue] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    status: str = "succeeded"
    reason: str | None = None
    duration_s: float | None = None

    @classmethod
    def from_result(cls, result: RunResult) -> TrialRecord:
        """The record of a finished run's ``result.json``."""
        timings = result.timings
        return cls(
            run_id=result.run_id,
            params=dict(result.params),
            metrics=dict(result.metrics),
            status="succeeded" if result.ok else "failed",
            reason=result.reason,
            duration_s=timings.load + timings.fit + timings.evaluate + timings.save,
        )


def configured_params(config: Mapping[str, Any]) -> dict[str, JsonValue]:
    """The estimator's import path and configured params, by sweep path (``estimator.<param>``)."""
    spec = config.get("spec")
    pipeline = spec.get("pipeline") if isinstance(spec, Mapping) else None
    estimator = pipeline.get("estimator") if isinstance(pipeline, Mapping) else None
    if not isinstance(estimator, Mapping):
        return {}
    params = estimator.get("params")
    found: dict[str, JsonValue] = {"estimator": str(estimator.get("import", ""))}
    found.update({f"estimator.{k}": v for k, v in (params if isinstance(params, Mapping) else {}).items()})
    return found


class MlflowTracker:
    """Logs jobs and their trials to MLflow; does nothing (and imports nothing) when tracking is off."""

    def __init__(self, settings: MlflowSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._client: MlflowClient | None = None
        self._experiments: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        """True when a tracking URI is configured."""
        return self.settings.tracking_uri is not None

    def log_job(
        self,
        job_id: str,
        model_name: str,
        feature_set: str,
        trials: Sequence[TrialRecord],
        selected: Sequence[str],
        lineage: Mapping[str, Any],
        *,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Log a job as a parent run with one nested run per trial (again for a redelivered job: no-op).

        Args:
            job_id: the training job.
            model_name: the model; names the experiment through the template.
            feature_set: ``name@version``.
            trials: every trial, failed ones included.
            selected: run ids of the selected trial(s).
            lineage: the job's lineage, logged as ``lineage.*`` params of the parent run.
            config: the Model config; its estimator params are logged on every trial.

        Returns:
            Trial run id → MLflow run id (empty when tracking is off).

        Raises:
            TrackingError: MLflow refused or could not be reached.
        """
        if not self.enabled:
            return {}
        try:
            return self._log_job(job_id, model_name, feature_set, trials, selected, lineage, config or {})
        except TrackingError:
            raise
        except Exception as error:
            raise self._error(f"logging job {job_id}", error) from error

    def record_registration(self, job_id: str, version: int) -> int:
        """Set ``pfactory.registry_version`` on every run of a job; returns how many runs were tagged."""
        if not self.enabled:
            return 0
        try:
            client = self._mlflow()
            experiments = client.search_experiments(filter_string=f"tags.`{MANAGED_TAG}` = 'true'")
            runs = self._runs(client, [e.experiment_id for e in experiments], job_id) if experiments else []
            for run in runs:
                client.set_tag(run.info.run_id, "pfactory.registry_version", str(version))
        except Exception as error:
            raise self._error(f"recording version {version} of job {job_id}", error) from error
        if not runs:
            log.warning("no MLflow runs of job %s to tag with registry version %s", job_id, version)
        return len(runs)

    # ------------------------------------------------------------ internals

    def _log_job(
        self,
        job_id: str,
        model_name: str,
        feature_set: str,
        trials: Sequence[TrialRecord],
        selected: Sequence[str],
        lineage: Mapping[str, Any],
        config: Mapping[str, Any],
    ) -> dict[str, str]:
        from mlflow.entities import RunStatus

        client = self._mlflow()
        experiment_id = self._experiment(client, self.settings.experiment.format(model_name=model_name))
        existing = self._runs(client, [experiment_id], job_id)
        parents = sorted((r for r in existing if r.data.tags.get("pfactory.role") == "job"), key=_started)
        children = {
            r.data.tags.get("pfactory.run_id"): r
            for r in existing
            if r.data.tags.get("pfactory.role") == "trial"
        }
        base = {**self.settings.tags, "pfactory.job_id": job_id, "pfactory.model": model_name}
        base |= {"pfactory.feature_set": feature_set, "pfactory.registry_version": PENDING}
        if parents:
            parent = parents[0]
            base["pfactory.registry_version"] = parent.data.tags.get("pfactory.registry_version", PENDING)
        else:
            tags = {**base, "pfactory.role": "job", "pfactory.selected": ",".join(selected)}
            parent = client.create_run(experiment_id, tags=tags, run_name=f"{model_name} job {job_id}")
        parent_id = parent.info.run_id
        if parent.info.status in _DONE:
            return {t.run_id: children[t.run_id].info.run_id for t in trials if t.run_id in children}
        lineage_params = {f"lineage.{k}": v for k, v in _flatten(lineage).items()}
        self._log(parent_id, _params(lineage_params, skip=parent.data.params), [])
        defaults = configured_params(config)
        logged: dict[str, str] = {}
        for trial in trials:
            child = children.get(trial.run_id)
            if child is not None and child.info.status in _DONE:
                logged[trial.run_id] = child.info.run_id
                continue
            if child is not None:  # half-logged before a crash: start it again
                client.delete_run(child.info.run_id)
            now = int(time.time() * 1000)
            tags = base | {
                "pfactory.role": "trial",
                "pfactory.run_id": trial.run_id,
                "mlflow.parentRunId": parent_id,
            }
            tags |= {
                "pfactory.status": trial.status,
                "pfactory.selected": str(trial.run_id in selected).lower(),
            }
            tags |= {"pfactory.reason": trial.reason[:_MAX_TAG]} if trial.reason else {}
            started = now - int((trial.duration_s or 0.0) * 1000)
            run = client.create_run(experiment_id, start_time=started, tags=tags, run_name=trial.run_id)
            run_id = run.info.run_id
            self._log(run_id, _params({**defaults, **trial.params}), _metrics(trial, now))
            status = RunStatus.FINISHED if trial.status == "succeeded" else RunStatus.FAILED
            client.set_terminated(run_id, RunStatus.to_string(status), end_time=now)
            logged[trial.run_id] = run_id
        any_ok = any(t.status == "succeeded" for t in trials)
        client.set_terminated(parent_id, "FINISHED" if any_ok else "FAILED")
        return logged

    def _log(self, run_id: str, params: list[tuple[str, str]], metrics: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric, Param

        client = self._mlflow()
        for i in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=[Param(k, v) for k, v in params[i : i + _PARAMS_PER_BATCH]])
        for i in range(0, len(metrics), _METRICS_PER_BATCH):
            chunk = metrics[i : i + _METRICS_PER_BATCH]
            client.log_batch(run_id, metrics=[Metric(k, v, at, 0) for k, v, at in chunk])

    def _mlflow(self) -> MlflowClient:
        with self._lock:
            if self._client is None:
                # mlflow logs database migrations and store set-up at INFO; the worker's log is not for that
                for name in ("mlflow", "alembic"):
                    logging.getLogger(name).setLevel(logging.WARNING)
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.settings.tracking_uri)
            return self._client

    def _experiment(self, client: MlflowClient, name: str) -> str:
        if name in self._experiments:
            return self._experiments[name]
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name, tags={MANAGED_TAG: "true"})
            except MlflowException:  # created meanwhile by another worker
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        elif experiment.lifecycle_stage != "active":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}) or set PF_TRAINER_MLFLOW_EXPERIMENT to another name"
            )
        else:
            experiment_id = experiment.experiment_id
            if experiment.tags.get(MANAGED_TAG) != "true":
                client.set_experiment_tag(experiment_id, MANAGED_TAG, "true")
        self._experiments[name] = experiment_id
        return experiment_id

    def _runs(self, client: MlflowClient, experiment_ids: list[str], job_id: str) -> list[Run]:
        quote = "'" if "'" not in job_id else '"'
        if quote in job_id:
            raise TrackingError(f"job id {job_id!r} holds both quote characters; MLflow cannot search for it")
        query = f"tags.`pfactory.job_id` = {quote}{job_id}{quote}"
        runs: list[Run] = []
        token: str | None = None
        while True:
            page = client.search_runs(experiment_ids, filter_string=query, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _error(self, doing: str, error: Exception) -> TrackingError:
        uri = _redacted(self.settings.tracking_uri or "")
        return TrackingError(
            f"MLflow tracking at {uri} failed while {doing}: {type(error).__name__}: {error}; check that the "
            "tracking server is reachable (PF_TRAINER_MLFLOW_TRACKING_URI), or unset it to turn tracking off"
        )


def _started(run: Run) -> int:
    return int(run.info.start_time or 0)


def _redacted(uri: str) -> str:
    """The URI without a password (``postgresql://user:secret@host`` → ``postgresql://user:***@host``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _key(name: str) -> str:
    return _BAD_KEY_CHARS.sub("_", name)[:_MAX_KEY]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _params(params: Mapping[str, Any], skip: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """MLflow params: safe keys, text values cut to MLflow's limit, keys already logged skipped."""
    out: dict[str, str] = {}
    for name, value in params.items():
        text = _text(value)
        out[_key(str(name))] = text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 1] + "…"
    return [(k, v) for k, v in out.items() if k not in (skip or {})]


def _flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """One level of nesting as dotted names (``row_counts.train``); deeper values stay JSON."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Mapping):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[str(name)] = value
    return flat


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _metrics(trial: TrialRecord, at: int) -> list[tuple[str, float, int]]:
    """``<m>``, ``<m>_ci_low``, ``<m>_ci_high`` of every metric, and the trial's duration."""
    rows: list[tuple[str, float, int]] = []
    for name, raw in trial.metrics.items():
        entry: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {"value": raw}
        if (
            _finite(entry.get("value")) is None
        ):  # a section (calibration, ...) or a value that is not a number
            continue
        for suffix, part in (("", "value"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
            if (number := _finite(entry.get(part))) is not None:
                rows.append((_key(f"{name}{suffix}"), number, at))
    if (duration := _finite(trial.duration_s)) is not None:
        rows.append(("duration_s", duration, at))
    return rows
