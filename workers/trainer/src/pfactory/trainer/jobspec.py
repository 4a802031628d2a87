"""What one isolated training run is given, and what it leaves behind.

A training job is one or more *runs*. Each run executes in isolation (a forked process by default,
a Kubernetes pod in production) through the same entrypoint, ``python -m pfactory.trainer run-job
SPEC``, where SPEC is the URI of a :class:`RunSpec` JSON file. A run writes its outputs into
``RunSpec.output_uri`` (a local folder or an ``s3://`` prefix) and nothing else:

    model.skops      the fitted estimator (skops), written before result.json
    reference.json   training reference distributions and the input signature (for drift, scoring)
    result.json      a :class:`RunResult`, written last; its presence means the run finished

A run that fails writes ``result.json`` with ``ok: false`` and a reason a data scientist can act
on, when it still can; a run killed from outside (timeout, out of memory) leaves no result and the
launcher reports why from the exit status.

Run kinds:

* ``fit``: fit the pipeline with ``params`` applied, then evaluate it fully on the holdout
  (metrics with bootstrap intervals, calibration, fairness, reference distributions). A job
  without a sweep is one ``fit`` run; a sweep is one ``fit`` run per trial, and the champion's
  outputs are used as they are.
* ``ensemble``: combine the trials whose output folders are listed in ``inputs`` (their
  ``params``), fit the soft-voting or stacking ensemble on the training split, evaluate it fully.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

MODEL_FILE = "model.skops"
REFERENCE_FILE = "reference.json"
RESULT_FILE = "result.json"
SPEC_FILE = "spec.json"
LOG_FILE = "run.log"


class StoreLocation(BaseModel):
    """Where a store lives: a local folder, ``file://`` URI or ``s3://bucket/prefix``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    root: str
    endpoint_url: str | None = None
    region: str | None = None


class RunSpec(BaseModel):
    """Everything one isolated run needs; serialised to ``spec.json`` and passed by URI."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    job_id: str
    run_id: str = Field(description="'trial-000', 'trial-001', …, or 'ensemble'.")
    kind: Literal["fit", "ensemble"] = "fit"
    config: dict[str, Any] = Field(description="The validated Model config, as the user wrote it.")
    params: dict[str, JsonValue] = Field(
        default_factory=dict, description="Sweep overrides by '<step>.<param>' path (empty: as configured)."
    )
    inputs: list[str] = Field(
        default_factory=list, description="ensemble: output folders of the trials to combine."
    )
    feature_store: StoreLocation
    labels_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint override for an s3:// labels path."
    )
    working_dir: str | None = Field(
        default=None, description="Folder a relative local labels path in the config is read from."
    )
    output_uri: str = Field(description="Folder this run writes model.skops, reference.json, result.json.")
    threads: int = Field(default=1, ge=1, description="Threads the fit may use (BLAS, OpenMP, n_jobs).")


class Timings(BaseModel):
    """Seconds spent per phase of a run."""

    model_config = ConfigDict(extra="forbid")
    load: float = 0.0
    fit: float = 0.0
    evaluate: float = 0.0
    save: float = 0.0


class RunResult(BaseModel):
    """What a run reports in ``result.json``.

    ``metrics`` is ``{metric: {"value", "ci_low", "ci_high"}}`` plus ``"calibration"`` (a curve);
    ``fairness`` follows :mod:`pfactory.registry.cards`; ``lineage`` has the registry's ``Lineage``
    fields; ``framework`` is ``{"framework": name, <library>: <version>, …}``.
    """

    model_config = ConfigDict(extra="forbid")
    job_id: str
    run_id: str
    ok: bool
    stage: str = Field(description="Where the run ended: load, assemble, fit, evaluate, save or done.")
    reason: str | None = None
    params: dict[str, JsonValue] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    fairness: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    framework: dict[str, str] = Field(default_factory=dict)
    timings: Timings = Field(default_factory=Timings)
    sha256: str | None = Field(default=None, description="sha256 of model.skops.")
    size_bytes: int | None = None
