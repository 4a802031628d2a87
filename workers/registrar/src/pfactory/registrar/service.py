"""The registrar's domain: turn a trained model into a registered version. No network imports.

:func:`register` runs in a crash-safe order:

a. read the staged artifact and check its sha256 (and trusted types) against the event, and read
   the staged reference distributions (a JSON object) when the event names them; a mismatch, a
   URI outside the registry's artifact store or bad metadata refuses the model before anything is
   allocated;
b. allocate the version under the job id (the same job always gets the same number);
c. write ``model.skops``, ``reference.json``, ``config.yaml``, ``metrics.json``, ``card.json`` and
   ``card.md`` under the version's folder (overwriting is harmless: the content is the same);
d. commit the record: only now is the version visible.

A crash anywhere before (d) leaves no visible version, and the redelivered event resumes under the
same allocation; a redelivery after (d) finds the allocation committed and answers with the stored
version. Never a second version or a second artifact.

The version records the reference distributions at their copy in its own folder, never at the
staged object: ``staging/`` is expired by a lifecycle rule, a version lives until archived. Only
``{metric: number | {"value", "ci_low", "ci_high"}}`` entries of ``ModelTrained.metrics`` are
metrics; other sections (``calibration``, ``sweep``, ...) are kept as sent in ``metrics.json``,
where the model card reads them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from pfactory.contracts.events import (
    Event,
    JobStatus,
    JobStatusChanged,
    ModelRegistered,
    ModelTrained,
    RegistrationFailed,
)
from pfactory.registrar.gates import ConfigSectionError, GateResult, evaluate_gates, read_gate_config
from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.cards import build_card, render_json, render_markdown
from pfactory.registry.errors import ArtifactNotFoundError, UntrustedTypeError
from pfactory.registry.index import VersionIndex
from pfactory.registry.layout import VersionLayout
from pfactory.registry.model import (
    ArtifactInfo,
    AuditEntry,
    Lineage,
    MetricValue,
    ModelVersion,
    PairKey,
    VersionStatus,
    utc_now,
)
from pfactory.registry.serialization import FORMAT, sha256_hex, trusted_types_for
from pfactory.registry.staging import StagedArtifactURIError, key_from_uri

SERVICE = "registrar"
STAGE = "registering"
log = logging.getLogger("pfactory.registrar")

AfterArtifactsWritten = Callable[[VersionLayout], None]
"""Called between the artifact writes (c) and the commit (d); the test hook that crashes there."""

OnCommitted = Callable[[ModelVersion], None]
"""Called once per version, right after this registration committed it (never for a redelivery)."""

NON_METRIC_SECTIONS = frozenset({"calibration", "sweep"})
"""Sections of ``ModelTrained.metrics`` that are never metrics, whatever keys they hold."""
_FRAMEWORKS = {"sklearn": "scikit-learn", "lightgbm": "lightgbm", "xgboost": "xgboost"}


class RegistryStores(Protocol):
    """The two stores registration writes to (``pfactory.registry.wiring.Registry`` is one)."""

    @property
    def artifacts(self) -> ArtifactStore:
        """Where artifacts and cards go."""
        ...

    @property
    def index(self) -> VersionIndex:
        """Where versions are allocated and committed."""
        ...


class Refused(Exception):
    """The trained model cannot be registered; the message is the reason a person will read."""


@dataclass(frozen=True)
class Prepared:
    """Everything about a version that does not depend on its number, checked before allocation."""

    pair: PairKey
    data: bytes
    sha256: str
    metrics: dict[str, MetricValue]
    gates: list[GateResult]
    lineage: Lineage
    framework: str
    library_versions: dict[str, str]
    created_by: str
    reference: bytes | None = None


async def register(
    event: ModelTrained,
    registry: RegistryStores,
    *,
    after_artifacts_written: AfterArtifactsWritten | None = None,
    on_committed: OnCommitted | None = None,
) -> ModelRegistered | RegistrationFailed:
    """Register a trained model as a new candidate version of its pair.

    Args:
        event: the training result with its staged artifact.
        registry: the artifact store and version index.
        after_artifacts_written: called after step (c), before the commit (test hook).
        on_committed: called with the stored record when this call committed the version (step d);
            not when a redelivered event finds it committed already.

    Returns:
        ``ModelRegistered`` (also for a redelivered event: the same version), or
        ``RegistrationFailed`` with a reason when the model was refused (nothing allocated).
    """
    try:
        prepared = await prepare(event, registry.artifacts)
    except Refused as refusal:
        log.warning("refused job=%s model=%s: %s", event.job_id, event.model_name, refusal)
        return RegistrationFailed(job_id=event.job_id, model_name=event.model_name, reason=str(refusal))
    allocation = await registry.index.allocate(prepared.pair, event.job_id)
    if allocation.committed:
        stored = await registry.index.get(prepared.pair, allocation.version)
        log.info("job=%s already registered as %s", event.job_id, stored.label)
        return registered_event(event.job_id, stored)
    layout = VersionLayout(prepared.pair, allocation.version)
    reference_uri = registry.artifacts.uri(layout.reference) if prepared.reference is not None else None
    record = version_record(
        event, prepared, allocation.version, registry.artifacts.uri(layout.model), reference_uri
    )
    await write_version_files(registry.artifacts, layout, record, prepared, event)
    if after_artifacts_written is not None:
        after_artifacts_written(layout)
    stored = await registry.index.commit(record)
    if on_committed is not None:
        on_committed(stored)
    log.info(
        "job=%s registered %s (failed gates: %s)", event.job_id, stored.label, stored.failed_gates or "none"
    )
    return registered_event(event.job_id, stored)


async def prepare(event: ModelTrained, artifacts: ArtifactStore) -> Prepared:
    """Step (a): fetch and check the staged artifact, and read the metadata into registry shapes.

    Raises:
        Refused: a corrupt or foreign artifact, or metadata that does not fit the registry.
    """
    try:
        pair = PairKey(model_name=event.model_name, feature_set=event.feature_set)
    except ValidationError as error:
        raise Refused(f"model or feature set name cannot be registered: {_errors(error)}") from None
    config = event.config
    if config.get("kind") != "Model":
        raise Refused(f"the event's config is not a Model config (kind {config.get('kind')!r})")
    raw_metadata = config.get("metadata")
    metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    if metadata.get("name") not in (None, event.model_name):
        raise Refused(f"the config names model {metadata.get('name')!r}, the event {event.model_name!r}")
    if event.artifact.format != FORMAT:
        raise Refused(f"artifact format {event.artifact.format!r} is not accepted; only {FORMAT} is")
    try:
        key = key_from_uri(artifacts, event.artifact.uri)
        data = await artifacts.read(key)
    except (StagedArtifactURIError, ArtifactNotFoundError) as error:
        raise Refused(str(error)) from None
    actual = sha256_hex(data)
    if actual != event.artifact.sha256:
        raise Refused(
            f"staged artifact {event.artifact.uri} is corrupt: sha256 mismatch, the event says "
            f"{event.artifact.sha256} but the artifact hashes to {actual}"
        )
    try:
        trusted_types_for(data, version_label=f"{pair} (job {event.job_id})")
    except UntrustedTypeError as error:
        raise Refused(str(error)) from None
    except Exception as error:  # skops could not even read the file's schema
        raise Refused(f"staged artifact {event.artifact.uri} is not a readable skops file: {error}") from None
    try:
        metrics_config, fairness_config = read_gate_config(config)
    except ConfigSectionError as error:
        raise Refused(str(error)) from None
    reference = await read_reference(event, artifacts)
    metrics = parse_metrics(event.metrics)
    framework, library_versions = parse_framework(event.framework, config)
    owner = metadata.get("owner")
    submitter = event.lineage.get("submitted_by")
    return Prepared(
        pair=pair,
        data=data,
        sha256=actual,
        metrics=metrics,
        gates=evaluate_gates(metrics_config, fairness_config, metrics, event.fairness),
        lineage=parse_lineage(event, config),
        framework=framework,
        library_versions=library_versions,
        created_by=str(owner or submitter or SERVICE),
        reference=reference,
    )


async def read_reference(event: ModelTrained, artifacts: ArtifactStore) -> bytes | None:
    """The staged reference distributions the event names (None when it names none).

    Raises:
        Refused: the URI is outside the registry's artifact store, nothing is stored there, or it
            does not hold a JSON object.
    """
    if event.reference_uri is None:
        return None
    where = f"reference distributions (ModelTrained.reference_uri {event.reference_uri!r})"
    try:
        key = key_from_uri(artifacts, event.reference_uri)
    except StagedArtifactURIError:
        raise Refused(
            f"{where} are not inside the registry's artifact store; the trainer must write "
            f"reference.json to that store, next to the staged model ({event.artifact.uri})"
        ) from None
    try:
        data = await artifacts.read(key)
    except ArtifactNotFoundError:
        raise Refused(
            f"{where} were not found in the registry's artifact store; the staged files may have "
            "expired (staging/ lifecycle rule) or the trainer never wrote them: retrain the model"
        ) from None
    try:
        document = json.loads(data)
    except ValueError as error:
        raise Refused(f"{where} are not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise Refused(f"{where} must be a JSON object, not {type(document).__name__}")
    return data


def version_record(
    event: ModelTrained,
    prepared: Prepared,
    version: int,
    artifact_uri: str,
    reference_uri: str | None = None,
) -> ModelVersion:
    """The record to commit: a candidate with its gates, whose audit trail opens with why it passed or not.

    ``reference_uri`` is the version folder's copy of the reference distributions (not the staged one).
    """
    now = utc_now()
    failed = [gate for gate in prepared.gates if not gate.passed]
    if failed:
        summary = "failed gates: " + "; ".join(f"{g.name} ({g.reason})" for g in failed)
    elif prepared.gates:
        summary = f"all {len(prepared.gates)} gates passed"
    else:
        summary = "the config sets no gates"
    entry = AuditEntry(
        at=now,
        actor=prepared.created_by,
        action="registered",
        to=VersionStatus.CANDIDATE.value,
        reason=f"job {event.job_id}: {summary}",
    )
    return ModelVersion(
        model_name=prepared.pair.model_name,
        feature_set=prepared.pair.feature_set,
        version=version,
        allocation_key=event.job_id,
        artifact=ArtifactInfo(uri=artifact_uri, sha256=prepared.sha256, size_bytes=len(prepared.data)),
        framework=prepared.framework,
        library_versions=prepared.library_versions,
        config=event.config,
        metrics=prepared.metrics,
        fairness=event.fairness,
        gates={gate.name: gate.passed for gate in prepared.gates},
        reference_uri=reference_uri,
        lineage=prepared.lineage,
        status=VersionStatus.CANDIDATE,
        created_by=prepared.created_by,
        created_at=now,
        updated_at=now,
        audit=(entry,),
    )


async def write_version_files(
    artifacts: ArtifactStore,
    layout: VersionLayout,
    record: ModelVersion,
    prepared: Prepared,
    event: ModelTrained,
) -> None:
    """Step (c): the model first, then reference, config, metrics and card (each put replaces atomically)."""
    card = build_card(
        record,
        metrics_document=event.metrics,
        gate_reasons={gate.name: gate.reason for gate in prepared.gates},
    )
    await artifacts.put(layout.model, prepared.data)
    if prepared.reference is not None:
        await artifacts.put(layout.reference, prepared.reference)
    await artifacts.put(
        layout.config, yaml.safe_dump(event.config, sort_keys=False, allow_unicode=True).encode()
    )
    await artifacts.put(layout.metrics, json.dumps(event.metrics, indent=2, sort_keys=True).encode())
    await artifacts.put(layout.card_json, render_json(card).encode())
    await artifacts.put(layout.card_md, render_markdown(card).encode())


def parse_metrics(raw: Mapping[str, Any]) -> dict[str, MetricValue]:
    """Scalar metrics, as a number or ``{"value", "ci_low", "ci_high"}`` (or ``"ci": [low, high]``).

    Anything else (the ``calibration`` and ``sweep`` sections, any mapping without a ``value``)
    stays in ``metrics.json`` only; a value that is not a finite number is left out, so a threshold
    on it fails as not reported.
    """
    metrics: dict[str, MetricValue] = {}
    for name, value in raw.items():
        if name in NON_METRIC_SECTIONS:
            continue
        entry: Mapping[str, Any] = value if isinstance(value, Mapping) else {"value": value}
        number = _finite(entry.get("value"))
        if number is None:
            continue
        low, high = _finite(entry.get("ci_low")), _finite(entry.get("ci_high"))
        ci = entry.get("ci")
        if isinstance(ci, list | tuple) and len(ci) == 2:
            low, high = _finite(ci[0]), _finite(ci[1])
        metrics[str(name)] = MetricValue(value=number, ci_low=low, ci_high=high)
    return metrics


def parse_lineage(event: ModelTrained, config: Mapping[str, Any]) -> Lineage:
    """The lineage the trainer reported, the training window from the config where it is silent.

    Raises:
        Refused: a lineage field of the wrong shape.
    """
    fields = {name: event.lineage[name] for name in Lineage.model_fields if name in event.lineage}
    fields.setdefault("feature_set_version", event.feature_set.version)
    spec = config.get("spec")
    training = spec.get("training") if isinstance(spec, Mapping) else None
    window = training.get("window") if isinstance(training, Mapping) else None
    if isinstance(window, Mapping):
        fields.setdefault("start_ds", window.get("start"))
        fields.setdefault("end_ds", window.get("end"))
    try:
        return Lineage.model_validate(fields)
    except ValidationError as error:
        raise Refused(f"lineage does not fit the registry: {_errors(error)}") from None


def parse_framework(raw: Mapping[str, str], config: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The framework's name (reported, else from the estimator's import path) and library versions."""
    versions = {str(k): str(v) for k, v in raw.items()}
    name = versions.pop("framework", None) or versions.pop("name", None)
    if not name:
        spec = config.get("spec")
        pipeline = spec.get("pipeline") if isinstance(spec, Mapping) else None
        estimator = pipeline.get("estimator") if isinstance(pipeline, Mapping) else None
        path = estimator.get("import") if isinstance(estimator, Mapping) else None
        root = str(path).split(".", 1)[0] if path else ""
        name = _FRAMEWORKS.get(root, root or "unknown")
    return name, versions


def registered_event(job_id: str, record: ModelVersion) -> ModelRegistered:
    """The answer for a committed version."""
    return ModelRegistered(
        job_id=job_id,
        model_name=record.model_name,
        feature_set=record.feature_set,
        version=record.version,
        artifact_uri=record.artifact.uri,
        sha256=record.artifact.sha256,
        status=record.status.value,
    )


def failed(event: ModelTrained, error: Exception) -> RegistrationFailed:
    """The answer when registration broke on an unexpected error (a pending allocation stays invisible)."""
    reason = f"the registrar failed unexpectedly: {type(error).__name__}: {error}"
    return RegistrationFailed(job_id=event.job_id, model_name=event.model_name, reason=reason[:2000])


def running(event: ModelTrained) -> JobStatusChanged:
    """The job's status while registering."""
    return JobStatusChanged(job_id=event.job_id, status=JobStatus.RUNNING, stage=STAGE)


def answers(outcome: ModelRegistered | RegistrationFailed, artifacts: ArtifactStore) -> list[Event]:
    """What to publish for an outcome: the registry event, then the job's terminal status."""
    if isinstance(outcome, RegistrationFailed):
        failed = JobStatusChanged(
            job_id=outcome.job_id, status=JobStatus.FAILED, stage=STAGE, reason=outcome.reason
        )
        return [outcome, failed]
    layout = VersionLayout(
        PairKey(model_name=outcome.model_name, feature_set=outcome.feature_set), outcome.version
    )
    result = {
        "model": outcome.model_name,
        "feature_set": str(outcome.feature_set),
        "version": outcome.version,
        "status": outcome.status,
        "artifact_uri": outcome.artifact_uri,
        "sha256": outcome.sha256,
        "card_uri": artifacts.uri(layout.card_json),
        "card_markdown_uri": artifacts.uri(layout.card_md),
    }
    succeeded = JobStatusChanged(
        job_id=outcome.job_id or "", status=JobStatus.SUCCEEDED, stage="registered", result=result
    )
    return [outcome, succeeded]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _errors(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
        for e in error.errors(include_url=False)
    )
