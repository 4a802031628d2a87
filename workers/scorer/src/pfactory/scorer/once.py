"""``python -m pfactory.scorer.once``: score one day with one version, then exit (a pod's or a cron's job).

The same work as the worker's answer to a ``ScoringRequested`` (:func:`pfactory.scorer.service.answer_scoring_request`,
so the same resolution, sha256-checked loading, streaming, predictions file and drift report), started
from the command line instead of the bus. Settings come from the worker's environment (``PF_SCORER_*``,
``PF_REGISTRY_*``, and ``PF_BUS_*`` with ``--publish``)::

    python -m pfactory.scorer.once --model credit-default --feature-set credit_features@1 \\
        --version 4 --ds 2026-03-10 [--publish] [--job-id ID] [--termination-log /dev/termination-log]

Standard output: a short summary, then one JSON line (``status``, ``rows``, ``predictions_uri``, ``drift``...).
Exit 0 when the day was scored; 1 when it could not be (the error on stderr says what, where and how to
fix it); 2 for bad arguments or settings. With ``--publish`` the worker's events (job status,
``ScoringCompleted``, ``DriftDetected``, ``ScoringFailed``) go to Kafka under ids derived from the job id,
so a retried pod republishes the same events. ``--termination-log`` also writes the error to that file
(Kubernetes shows it as the pod's termination message; Airflow's KubernetesPodOperator quotes it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from pydantic import ValidationError

from pfactory.contracts.events import (
    DriftDetected,
    Event,
    FeatureSetRef,
    JobStatus,
    JobStatusChanged,
    ScoringCompleted,
    ScoringFailed,
    ScoringRequested,
)
from pfactory.scorer.settings import ScorerSettings

if TYPE_CHECKING:
    from pfactory.registry.wiring import RegistrySettings

# The registry's loader, the scorer's service and the batch code (skops, scikit-learn, pyarrow) are
# imported when the run starts, not with this module: bad arguments or settings are answered at once.

log = logging.getLogger("pfactory.scorer.once")

SCORED, FAILED, USAGE = 0, 1, 2
TERMINATION_MESSAGE_MAX = 4096  # what Kubernetes keeps of a termination message


class SettingsError(ValueError):
    """The environment does not describe a registry this run can open; the message says what to set."""


@dataclass(frozen=True)
class Request:
    """What to score, from the command line."""

    model_name: str
    feature_set: FeatureSetRef | None
    version: int | None
    alias: str | None
    ds: dt.date
    job_id: str
    publish: bool
    termination_log: Path | None

    @property
    def target(self) -> str:
        """``credit-default v4 (credit_features@1)``: the version as the user named it."""
        which = (
            f"v{self.version}"
            if self.version is not None
            else (f"alias {self.alias!r}" if self.alias is not None else "live version")
        )
        return f"{self.model_name} {which}" + (f" ({self.feature_set})" if self.feature_set else "")


@dataclass
class Outcome:
    """The events the scoring emitted, in order (whether or not they were also published)."""

    events: list[tuple[str, Event]] = field(default_factory=list)

    def labels(self) -> list[str]:
        """The stable labels of the emitted events."""
        return [label for label, _ in self.events]

    def first(self, kind: type[Event]) -> Any:
        """The first emitted event of ``kind`` (None when there was none)."""
        return next((event for _, event in self.events if isinstance(event, kind)), None)


def parse_args(argv: list[str]) -> Request:
    """The request the arguments describe (argparse exits 2 with usage on bad ones)."""
    parser = argparse.ArgumentParser(
        prog="python -m pfactory.scorer.once",
        description="Score one day's feature partition with one registered model version, write the "
        "predictions and drift report, and exit (0: scored, 1: could not score, 2: bad arguments).",
    )
    parser.add_argument("--model", required=True, help="the registered model's name")
    parser.add_argument(
        "--feature-set",
        type=_feature_set,
        default=None,
        help="NAME@VERSION of the model's feature set (needed when it is registered on several)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=_positive, default=None, help="the registry version number")
    which.add_argument("--alias", default=None, help="an alias such as 'champion' instead of --version")
    parser.add_argument("--ds", type=_day, required=True, help="the day to score, YYYY-MM-DD")
    parser.add_argument(
        "--job-id",
        default=None,
        help="id of the job the events carry (default: one derived from the request)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="publish the worker's events (job status, ScoringCompleted, DriftDetected...) to Kafka (PF_BUS_*)",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=None,
        help="also write a failure's explanation to this file (Kubernetes: /dev/termination-log)",
    )
    args = parser.parse_args(argv)
    if not args.model.strip():
        parser.error("--model must not be empty")
    which_version = args.version if args.version is not None else (args.alias or "live")
    job_id = args.job_id or (
        f"once-{args.model}-{args.feature_set or 'only'}-{which_version}-{args.ds.isoformat()}"
    )
    return Request(
        args.model,
        args.feature_set,
        args.version,
        args.alias,
        args.ds,
        job_id,
        args.publish,
        args.termination_log,
    )


def _feature_set(text: str) -> FeatureSetRef:
    name, at, version = text.rpartition("@")
    if not at or not name or not version:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME@VERSION (for example credit_features@1)")
    return FeatureSetRef(name=name, version=version)


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (1, 2, ...)")
    return number


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day in YYYY-MM-DD form") from None


def describe_registry(settings: RegistrySettings) -> str:
    """Where the versions are read from, as an operator would look for it."""
    if settings.backend == "embedded":
        return f"the embedded registry at {settings.data_dir.resolve()} (PF_REGISTRY_DATA_DIR)"
    bucket = settings.s3.bucket if settings.s3 else "?"
    table = settings.dynamodb.table_name if settings.dynamodb else "?"
    return f"the AWS registry (bucket {bucket}, table {table}; PF_REGISTRY_S3__*, PF_REGISTRY_DYNAMODB__*)"


def advice(request: Request, settings: ScorerSettings, outcome: Outcome, reason: str) -> str:
    """What failed, where, and how to fix it, from the stage the scoring reached."""
    failed = outcome.first(ScoringFailed)
    registry = describe_registry(settings.registry)
    store = f"{settings.store_root} (PF_SCORER_STORE_ROOT)"
    lines = [f"could not score {request.target} for {request.ds}: {reason}"]
    if failed is not None and failed.version is None:
        lines += [
            f"where: {registry}",
            "fix: check --model, --feature-set and --version/--alias against what that registry holds "
            "(listed above), or point PF_REGISTRY_* at the registry the model was registered in",
        ]
    elif "running-score" not in outcome.labels():
        lines += [
            f"where: version {failed.version if failed else '?'}'s artifact in {registry}",
            "fix: the stored model could not be loaded as registered; restore the artifact from a backup, "
            "or train and register a new version and score with that one",
        ]
    else:
        lines += [
            f"where: the feature store and predictions under {store}",
            "fix: see the reason above; once the day's features are there, run this command again "
            "(it replaces the day's predictions)",
        ]
    return "\n".join(lines)


async def score_once(
    request: Request, settings: ScorerSettings, emit: Callable[[str, Event], Awaitable[None]] | None
) -> Outcome:
    """Score the request's day as the worker would, recording (and with ``emit`` publishing) its events.

    Args:
        request: what to score.
        settings: the scorer worker's settings (registry, store, batch size).
        emit: also publish each event under its stable label (None: record only).

    Returns:
        The events, in the order the worker would have published them.
    """
    from pfactory.registry.index import ModelCatalog
    from pfactory.registry.loading import LoaderIndex, VersionLoader
    from pfactory.registry.wiring import build_registry
    from pfactory.scorer import service
    from pfactory.scorer.batch import Store

    outcome = Outcome()

    async def record(label: str, event: Event) -> None:
        outcome.events.append((label, event))
        if emit is not None:
            await emit(label, event)

    try:
        registry = await build_registry(settings.registry)
    except ValueError as error:  # e.g. the AWS backend without its bucket or table
        raise SettingsError(f"cannot open {describe_registry(settings.registry)}: {error}") from error
    try:
        if not isinstance(registry.index, ModelCatalog):
            raise TypeError(f"{type(registry.index).__name__} cannot list a model's pairs (ModelCatalog)")
        loader = VersionLoader(cast(LoaderIndex, registry.index), registry.artifacts, cache_size=1)
        store = Store(settings.store_root, settings.endpoint_url, settings.region)
        # no error is "transient" here: a failure ends the run with its reason, and the caller
        # (Airflow, a cron) decides whether to try again
        deps = service.ScorerDeps(
            loader,
            store,
            settings.batch_rows,
            transient=(),
            metrics=settings.telemetry.metrics(service.SERVICE),  # a pod's runs count like the worker's
            gateway_url=settings.gateway_url,
        )
        scoring = ScoringRequested(
            job_id=request.job_id,
            model_name=request.model_name,
            feature_set=request.feature_set,
            version=request.version,
            alias=request.alias,
            ds=request.ds,
        )
        await service.answer_scoring_request(scoring, deps, record)
    finally:
        await registry.close()
    return outcome


async def _run(request: Request, settings: ScorerSettings) -> Outcome:
    if not request.publish:
        return await score_once(request, settings, None)
    from pfactory.bus.broker import EventPublisher, build_broker
    from pfactory.scorer import service

    broker = build_broker(settings.bus, service=service.SERVICE)
    try:
        await broker.connect()
        publisher = EventPublisher(broker, producer=service.SERVICE)

        async def emit(label: str, event: Event) -> None:
            # the worker derives ids from the request's event id; here the job id plays that part
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pf:{service.SERVICE}/{request.job_id}/{label}"))
            await publisher.publish(event, event_id=event_id)

        return await score_once(request, settings, emit)
    finally:
        await broker.stop()


def summary(request: Request, outcome: Outcome, seconds: float) -> tuple[str, dict[str, Any]]:
    """The human summary and the JSON document of a finished run."""
    completed: ScoringCompleted | None = outcome.first(ScoringCompleted)
    status: JobStatusChanged | None = next(
        (e for _, e in reversed(outcome.events) if isinstance(e, JobStatusChanged)), None
    )
    document: dict[str, Any] = {
        "status": "succeeded" if completed is not None else "failed",
        "model": request.model_name,
        "feature_set": str(request.feature_set) if request.feature_set else None,
        "ds": request.ds.isoformat(),
        "job_id": request.job_id,
        "published": request.publish,
        "seconds": round(seconds, 3),
    }
    if completed is None:
        failed: ScoringFailed | None = outcome.first(ScoringFailed)
        document.update(
            version=failed.version if failed else request.version, reason=failed.reason if failed else None
        )
        return "", document
    result = status.result if status is not None and status.status == JobStatus.SUCCEEDED else {}
    document.update(
        version=completed.version,
        rows=completed.rows,
        predictions_uri=completed.predictions_uri,
        drift=completed.drift,
        drift_threshold=result.get("drift_threshold"),
        drifted=result.get("drifted", []),
    )
    drifted: DriftDetected | None = outcome.first(DriftDetected)
    lines = [
        f"scored {request.model_name} v{completed.version} for {request.ds}: {completed.rows} rows "
        f"in {seconds:.1f} s -> {completed.predictions_uri}"
    ]
    if not completed.drift:
        lines.append("drift: not measured (the version records no reference)")
    elif drifted is None:
        lines.append(
            f"drift: nothing above PSI {document['drift_threshold']} "
            f"(largest {max(completed.drift, key=completed.drift.__getitem__)} "
            f"{max(completed.drift.values()):.3f})"
        )
    else:
        moved = ", ".join(f"{name} {psi:.3f}" for name, psi in sorted(drifted.feature_psi.items()))
        score = f"; score {drifted.score_psi:.3f}" if drifted.score_psi is not None else ""
        lines.append(f"DRIFT above PSI {drifted.threshold}: {moved or 'no input'}{score}")
    return "\n".join(lines), document


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Score one day and report it.

    Args:
        argv: the arguments after the module name; None reads ``sys.argv``.
        out: where the summary and the JSON line go (stdout by default).
        err: where errors go (stderr by default).

    Returns:
        The exit code: 0 scored, 1 could not score, 2 bad arguments or settings.
    """
    out, err = out or sys.stdout, err or sys.stderr
    request = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = ScorerSettings()
    except ValidationError as error:
        message = f"the scorer's settings (PF_SCORER_*, PF_REGISTRY_*, PF_BUS_*) are invalid: {error}"
        return _fail(request, message, USAGE, out, err)
    try:
        logging.basicConfig(
            level=settings.log_level.upper(),
            stream=err,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    except ValueError:
        message = (
            f"PF_SCORER_LOG_LEVEL {settings.log_level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)"
        )
        return _fail(request, message, USAGE, out, err)
    started = time.perf_counter()
    try:
        outcome = asyncio.run(_run(request, settings))
    except SettingsError as error:
        return _fail(request, str(error), USAGE, out, err)
    except Exception as error:
        where = f"Kafka at {settings.bus.bootstrap_servers} (PF_BUS_*)" if request.publish else "the registry"
        message = (
            f"could not score {request.target} for {request.ds}: {type(error).__name__}: {error}\n"
            f"where: {where}\n"
            "fix: check that it is reachable from here"
            + (" or drop --publish" if request.publish else "")
            + ", then run this command again"
        )
        log.debug("the run failed", exc_info=True)
        return _fail(request, message, FAILED, out, err)
    text, document = summary(request, outcome, time.perf_counter() - started)
    if document["status"] != "succeeded":
        message = advice(request, settings, outcome, str(document.get("reason")))
        return _fail(request, message, FAILED, out, err, document)
    print(text, file=out)
    print(json.dumps(document, sort_keys=True), file=out, flush=True)
    return SCORED


def _fail(
    request: Request,
    message: str,
    code: int,
    out: TextIO,
    err: TextIO,
    document: dict[str, Any] | None = None,
) -> int:
    print(f"error: {message}", file=err, flush=True)
    if request.termination_log is not None:
        try:
            request.termination_log.write_text(
                message.encode()[:TERMINATION_MESSAGE_MAX].decode(errors="ignore")
            )
        except OSError as error:
            print(f"(could not write the termination log {request.termination_log}: {error})", file=err)
    document = document or {
        "status": "failed",
        "model": request.model_name,
        "ds": request.ds.isoformat(),
        "job_id": request.job_id,
    }
    document["error"] = message
    print(json.dumps(document, sort_keys=True), file=out, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
