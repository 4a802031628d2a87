"""Trainer benchmark: the platform's overhead per model against MLflow logging + registration.

Starts the embedded stack (Tansu, gateway, workers as processes; loopback only) on the example credit
features (~7 days x 200 applicants, written in the materialiser's layout under the stack's home) and
submits small models one at a time through the gateway's HTTP API: an imputer, a scaler and a one-hot
encoder before a LogisticRegression, no sweep, the default evaluation (metrics with 200 bootstrap
resamples, calibration, reference distributions; fairness on age band and gender unless
``--no-fairness``). A bus follower started before the first submission timestamps every event of each
job. Per model: submission -> ModelTrained, submission -> ModelRegistered, the fit itself (``timings.fit``
of the run's ``result.json``) and the overhead as issue #5 defines it: submission -> the training-completed
event (ModelTrained: artifact staged with its sha256, evaluation and fairness report done) - fit; also the
overhead to the registered version (ModelRegistered, model card written), with a breakdown by stage. Then a burst of ``--burst`` models submitted at once measures
models/hour.

In the same run, the same models (same training set, same pipeline, same C values) are fitted in this
process and logged with MLflow against a SQLite tracking + registry store: ``start_run`` + ``log_params``
+ ``log_metrics`` + ``mlflow.sklearn.log_model(..., registered_model_name=...)`` with ``pip_requirements``
pinned, and a few with default settings. Fit and metric computation are outside MLflow's timed section.
MLflow 3.17's default inside a uv project (this repository) runs ``uv export`` instead of inferring the
requirements from the model; the bench sets ``MLFLOW_UV_AUTO_DETECT=false`` so its default is the
inference the anchor measured.

    uv run python bench/trainer_bench.py                       # 50 models, burst of 30, 5 MLflow defaults
    uv run python bench/trainer_bench.py --models 10 --burst 10 --mlflow-default 2 --no-fairness
    uv run python bench/trainer_bench.py --no-mlflow --env OPENBLAS_NUM_THREADS=1   # env for every service

Reading the figures: Tansu does not answer a waiting fetch when a record arrives, so each bus hop waits
for the consumer's next fetch (aiokafka's ``fetch_max_wait_ms``, 500 ms by default): the hops to the
trainer and to the registrar then dominate the sequential latency and absorb changes elsewhere. The
feature partitions and labels come from ``tests/workers/trainer/credit_data.py`` (the example's
features computed with pandas, in the materialiser's layout).

Anchor (issue #5, this machine): MLflow 3.17 on SQLite, start_run + params + metrics + log_model with
registration: median 3.7 s per model by default (pip-requirements inference), 89 ms with
pip_requirements pinned.
Target: our median overhead below MLflow's pinned median measured in the same run (so <= 1/40 of its
default), while doing more (isolation, evaluation, model card); >= 1,000 small models/hour on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from pyarrow import fs
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.libs.features.partitions import PartitionWriter  # noqa: E402
from tests.workers.trainer.credit_data import FEATURE_SET, credit_features, generator  # noqa: E402

from pfactory.bus.reading import topic_partitions  # noqa: E402
from pfactory.cli.stack import Stack  # noqa: E402
from pfactory.contracts import topics  # noqa: E402
from pfactory.contracts.events import Envelope  # noqa: E402

MLFLOW_DEFAULT_S = 3.7
MLFLOW_PINNED_S = 0.089
TARGET_PER_HOUR = 1000
START = dt.date(2024, 1, 1)
MODEL_NAME = "bench-credit-lr"
NUMERIC = [
    "age", "income", "debt_to_income", "utilisation", "n_open_accounts", "n_late_payments_90d",
    "months_at_address",
]  # fmt: skip
FOLLOWED = (
    topics.TRAIN_REQUESTED,
    topics.MODEL_TRAINED,
    topics.TRAINING_FAILED,
    topics.MODEL_REGISTERED,
    topics.REGISTRATION_FAILED,
    topics.JOB_STATUS,
)


def say(line: str = "") -> None:
    print(line, flush=True)


# ---------------------------------------------------------------------------- data and configs


def write_features(home: Path, raw: Path, days: int, applicants: int, seed: int) -> None:
    """Raw credit data under ``raw``; validated partitions under ``home/features`` (the trainer's root)."""
    generator().generate(raw, START, days, applicants, seed, progress_every=0)
    writer = PartitionWriter(fs.LocalFileSystem(), str(home), feature_set=FEATURE_SET, version="1")
    for offset in range(days):
        ds = START + dt.timedelta(days=offset)
        writer.good(ds, credit_features(raw, ds))


def c_values(count: int) -> list[float]:
    """One regularisation strength per model, log-spaced over 1e-2 .. 1e2: 50 distinct models."""
    if count == 1:
        return [1.0]
    return [round(10 ** (-2 + 4 * i / (count - 1)), 6) for i in range(count)]


def model_config(raw: Path, days: int, c: float, *, fairness: bool) -> dict[str, Any]:
    """The example credit model with a small LogisticRegression pipeline and no sweep."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "credit_model.yaml").read_text())
    spec = config["spec"]
    config["metadata"]["name"] = MODEL_NAME
    spec["labels"]["path"] = str(raw / "labels")
    end = START + dt.timedelta(days=days - 1)
    spec["training"]["window"] = {"start": START.isoformat(), "end": end.isoformat()}
    spec.pop("sweep", None)
    spec["pipeline"] = {
        "steps": [
            {
                "name": "impute",
                "import": "sklearn.impute.SimpleImputer",
                "params": {"strategy": "median"},
                "columns": NUMERIC,
            },
            {
                "name": "prep",
                "remainder": "drop",
                "transformers": [
                    {"name": "numeric", "import": "sklearn.preprocessing.StandardScaler", "columns": NUMERIC},
                    {
                        "name": "categorical",
                        "import": "sklearn.preprocessing.OneHotEncoder",
                        "params": {"handle_unknown": "ignore", "sparse_output": False},
                        "columns": ["employment_status"],
                    },
                ],
            },
        ],
        "estimator": {
            "import": "sklearn.linear_model.LogisticRegression",
            "params": {"C": c, "max_iter": 500},
        },
    }
    spec["metrics"].pop("thresholds", None)  # a weak C must still register: the gate is not measured here
    if not fairness:
        spec.pop("fairness", None)
    spec["resources"] = {"cpu": 1, "memory": "2Gi", "timeout_seconds": 300, "gpu": 0}
    plain: dict[str, Any] = json.loads(json.dumps(config, default=str))  # dates as the YAML text has them
    return plain


# ---------------------------------------------------------------------------- the bus follower


@dataclass(frozen=True)
class Seen:
    """One event of a job: its envelope and when the producer sent it."""

    envelope: Envelope
    topic: str
    sent: float  # the record's timestamp (producer send time), epoch seconds


class BusFollower:
    """Reads the job topics from their end, without a consumer group, from before the first submission."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="pfactory-trainer-bench",
            enable_auto_commit=False,
            # the figures use record times, so this follower's own latency stays out of them; a short wait
            # here would load the broker (every fetch touches every followed partition) during the runs
            fetch_max_wait_ms=250,
        )
        self.events: dict[str, list[Seen]] = defaultdict(list)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions: list[TopicPartition] = []
        for topic in FOLLOWED:
            partitions += await topic_partitions(self._consumer, topic, timeout_s=10)
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end offsets now, before anything is submitted
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _follow(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            added = False
            for records in batches.values():
                for record in records:
                    try:
                        envelope = Envelope.from_bytes(record.value or b"")
                    except ValidationError:
                        continue
                    seen = Seen(envelope, record.topic, record.timestamp / 1000)
                    self.events[envelope.correlation_id].append(seen)
                    added = True
            if added:
                async with self._changed:
                    self._changed.notify_all()

    async def wait(self, job_ids: Sequence[str], timeout_s: float) -> None:
        """Until every job has finished (see ``_terminal``), or raise with what was seen."""

        def finished() -> bool:
            return all(_terminal(self.events.get(job_id, [])) for job_id in job_ids)

        async with self._changed:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(finished)
            except TimeoutError:
                late = [j for j in job_ids if not _terminal(self.events.get(j, []))]
                raise SystemExit(
                    f"{len(late)} job(s) not finished after {timeout_s:.0f} s, e.g. {late[0]}: seen "
                    f"{[s.envelope.type for s in self.events.get(late[0], [])]}; see the stack's logs"
                ) from None


def _status(seen: Seen) -> dict[str, Any]:
    return seen.envelope.payload if seen.envelope.type == "JobStatusChanged" else {}


def _terminal(seen: Sequence[Seen]) -> bool:
    """Failed, or succeeded with its ModelRegistered read too (the two travel on different topics)."""
    statuses = {_status(s).get("status") for s in seen}
    if statuses & {"failed", "cancelled"}:
        return True
    return "succeeded" in statuses and any(s.envelope.type == "ModelRegistered" for s in seen)


# ---------------------------------------------------------------------------- one platform job


STAGES = (
    ("submit->published", "HTTP submit, validation, job + outbox write, relay publish"),
    ("published->trainer", "bus hop to the trainer, record check, config validation"),
    ("trainer->launch", "trainer start status to the launcher's run() (run slot, status publish)"),
    ("launch", "launcher run() minus the run's phases: spec write, fork, child setup, exit, result read"),
    ("load", "run: read the config, features and labels (point-in-time join)"),
    ("fit", "run: assemble and fit the pipeline (excluded from the overhead)"),
    ("evaluate", "run: metrics + bootstrap CIs, calibration, fairness, reference"),
    ("save", "run: skops dump, model.skops + reference.json"),
    ("run->ModelTrained", "run-finished status to ModelTrained: staging, training record, publish"),
    ("ModelTrained->registrar", "bus hop to the registrar"),
    ("registrar->ModelRegistered", "registration: verify sha256 + types, version, card, commit"),
)


@dataclass
class JobTimes:
    """One platform job's timeline, in seconds from its submission."""

    job_id: str
    trained: float
    registered: float
    terminal: float
    fit: float
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """The issue's measure: submission to the training-completed event (ModelTrained), minus the fit."""
        return self.trained - self.fit

    @property
    def overhead_registered(self) -> float:
        """Further, to the version registered with its card (MLflow's timed part also registers)."""
        return self.registered - self.fit


def job_times(job_id: str, submitted: float, seen: Sequence[Seen], home: Path) -> JobTimes:
    """The job's timeline from its events and its run's ``result.json``; raises when it did not succeed."""

    def first(match: Callable[[Seen], bool], what: str) -> float:
        for s in seen:
            if match(s):
                return s.sent
        types = [(s.envelope.type, _status(s).get("stage"), _status(s).get("status")) for s in seen]
        failure = next(
            (s.envelope.payload.get("reason") for s in seen if s.envelope.payload.get("reason")), None
        )
        raise SystemExit(f"job {job_id}: no {what}; seen {types}; reason: {failure}")

    def status(producer: str, stage: str, done: int | None = None) -> Callable[[Seen], bool]:
        def match(s: Seen) -> bool:
            payload = _status(s)
            progress = payload.get("progress") or {}
            return (
                s.envelope.producer == producer
                and payload.get("stage") == stage
                and (done is None or progress.get("done") == done)
            )

        return match

    published = first(lambda s: s.topic == topics.TRAIN_REQUESTED, "TrainRequested on the bus")
    started = first(status("trainer", "training", 0), "trainer 'training' status")
    run_done = first(status("trainer", "training", 1), "trainer run-finished status")
    trained = first(lambda s: s.envelope.type == "ModelTrained", "ModelTrained")
    registering = first(status("registrar", "registering"), "registrar 'registering' status")
    registered = first(lambda s: s.envelope.type == "ModelRegistered", "ModelRegistered")
    terminal = first(lambda s: _status(s).get("status") == "succeeded", "succeeded status")
    result = json.loads((home / "trainer" / f"job={job_id}" / "trial-000" / "result.json").read_text())
    timings = result["timings"]
    trial = next(
        s.envelope.payload["result"]["training"]["trials"][0] for s in seen if status("trainer", "trained")(s)
    )
    run_s = float(trial["duration_s"])  # the launcher's run(): spec write, fork, run, exit, result read
    inside = sum(timings[k] for k in ("load", "fit", "evaluate", "save"))
    stages = {
        "submit->published": published - submitted,
        "published->trainer": started - published,
        # between the two statuses: launcher.run() (run_s) and what the trainer does around it
        "trainer->launch": max(0.0, (run_done - started) - run_s),
        "launch": run_s - inside,
        "load": timings["load"],
        "fit": timings["fit"],
        "evaluate": timings["evaluate"],
        "save": timings["save"],
        "run->ModelTrained": trained - run_done,
        "ModelTrained->registrar": registering - trained,
        "registrar->ModelRegistered": registered - registering,
    }
    return JobTimes(
        job_id=job_id,
        trained=trained - submitted,
        registered=registered - submitted,
        terminal=terminal - submitted,
        fit=float(timings["fit"]),
        stages=stages,
    )


class Platform:
    """Submits model configs through the gateway and times them through the bus."""

    def __init__(self, stack: Stack, follower: BusFollower, timeout_s: float) -> None:
        self.stack = stack
        self.follower = follower
        self.timeout_s = timeout_s
        self.http = httpx.AsyncClient(
            base_url=stack.gateway_url,
            headers={"Authorization": f"Bearer {stack.api_key}"},
            timeout=30.0,
            trust_env=False,  # loopback only: no proxy from the environment
        )

    async def submit(self, config: dict[str, Any]) -> tuple[str, float]:
        submitted = time.time()
        response = await self.http.post("/v1/jobs", json={"config": config})
        if response.status_code != 202:
            raise SystemExit(f"the gateway refused the config: {response.status_code} {response.text[:2000]}")
        return str(response.json()["job_id"]), submitted

    async def one(self, config: dict[str, Any]) -> JobTimes:
        job_id, submitted = await self.submit(config)
        await self.follower.wait([job_id], self.timeout_s)
        return job_times(job_id, submitted, self.follower.events[job_id], self.stack.home)

    async def burst(self, configs: Sequence[dict[str, Any]]) -> tuple[float, list[JobTimes]]:
        """Submit all at once (sequential POSTs, no waiting in between); wall seconds to the last registration."""
        submitted = [await self.submit(config) for config in configs]
        await self.follower.wait([job_id for job_id, _ in submitted], self.timeout_s * len(configs))
        times = [job_times(j, t, self.follower.events[j], self.stack.home) for j, t in submitted]
        first = submitted[0][1]
        last = max(t.registered + s for t, (_, s) in zip(times, submitted, strict=True))
        return last - first, times

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass
class PlatformResult:
    """What the platform half measured."""

    sequential: list[JobTimes]
    burst_wall: float = 0.0
    burst: list[JobTimes] = field(default_factory=list)
    idle_cpu: float | None = None  # share of one core the idle stack uses (polling consumers, relays)


def stack_cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each service of the stack (its session: the service, its children and
    the reaped ones) and by the broker."""
    broker = getattr(stack.broker, "_process", None)
    sessions = {pid: name for name, pid in stack.pids.items()}
    if broker is not None:
        sessions[broker.pid] = "broker"
    used: dict[str, float] = defaultdict(float)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        name = sessions.get(int(fields[3]))  # session id; utime, stime, and those of reaped children
        if name is not None:
            used[name] += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return used


async def run_platform(
    stack: Stack, configs: list[dict[str, Any]], burst: int, warmup: int, timeout_s: float, idle_s: float
) -> PlatformResult:
    follower = BusFollower(stack.bootstrap_servers)
    await follower.start()
    platform = Platform(stack, follower, timeout_s)
    try:
        began = time.perf_counter()
        for index in range(warmup):  # the fork server starts with the first run; caches fill
            await platform.one(configs[index % len(configs)])
        say(f"  warm-up: {warmup} model(s) in {time.perf_counter() - began:.1f}s (excluded)")
        idle = None
        if idle_s > 0:  # a measurement window, not a wait for something
            used = stack_cpu_seconds(stack)
            await asyncio.sleep(idle_s)
            after = stack_cpu_seconds(stack)
            shares = {name: (after[name] - used.get(name, 0.0)) / idle_s for name in after}
            idle = sum(shares.values())
            parts = ", ".join(f"{name} {share * 100:.0f}%" for name, share in sorted(shares.items()))
            say(f"  idle stack: {idle * 100:.1f}% of one core over {idle_s:.0f}s ({parts})")
        result = PlatformResult(sequential=[], idle_cpu=idle)
        for index, config in enumerate(configs):
            times = await platform.one(config)
            result.sequential.append(times)
            say(
                f"  model {index + 1:>2}/{len(configs)}: registered after {times.registered * 1000:6.0f} ms "
                f"(trained {times.trained * 1000:5.0f} ms, fit {times.fit * 1000:5.0f} ms) "
                f"-> overhead {times.overhead * 1000:5.0f} ms"
            )
        if burst:
            say(f"  burst: {burst} models submitted at once")
            result.burst_wall, result.burst = await platform.burst(
                [configs[i % len(configs)] for i in range(burst)]
            )
        return result
    finally:
        await platform.aclose()
        await follower.stop()


# ---------------------------------------------------------------------------- MLflow


def run_mlflow(
    folder: Path, home: Path, configs: list[dict[str, Any]], defaults: int
) -> tuple[list[float], list[float], list[float]]:
    """The same models fitted here and logged with MLflow: (pinned seconds, default seconds, fit seconds)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # loopback only
    os.environ.setdefault("DO_NOT_TRACK", "true")
    # Inside a uv project (this repository) MLflow's default would run `uv export` instead of inferring
    # the requirements from the model; the anchor is the inference, so that detection is off.
    os.environ.setdefault("MLFLOW_UV_AUTO_DETECT", "false")
    warnings.filterwarnings("ignore")  # MLflow's advice (no signature, ...) is not under test here
    import cloudpickle  # type: ignore[import-untyped]
    import mlflow
    import mlflow.sklearn
    import numpy as np
    import sklearn  # type: ignore[import-untyped]
    import skops.io  # type: ignore[import-untyped]

    from pfactory.contracts.configs.model import ModelConfig
    from pfactory.contracts.imports import ImportAllowlist, ImportSettings
    from pfactory.contracts.loader import load_config_dict
    from pfactory.features.reader import FeatureReader
    from pfactory.trainer.assembly import build_pipeline
    from pfactory.trainer.dataset import build_training_set
    from pfactory.trainer.evaluation import Prediction, evaluate

    allowlist = ImportAllowlist.from_settings(ImportSettings())
    specs = [load_config_dict(c, expect=ModelConfig, allowlist=allowlist).spec for c in configs]
    training = build_training_set(specs[0], FeatureReader(str(home)))  # the same data the trainer reads
    pinned = [
        f"scikit-learn=={sklearn.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
        f"numpy=={np.__version__}",
    ]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # MLflow's own lines ("Created version ...", migrations, warnings) go to stderr; kept out of the figures
    with contextlib.redirect_stderr(io.StringIO()):
        experiment = mlflow.create_experiment(
            "trainer-bench", artifact_location=(folder / "artifacts").as_uri()
        )

    def fitted(index: int) -> tuple[Any, dict[str, Any], dict[str, float], float]:
        spec = specs[index % len(specs)]
        pipeline = build_pipeline(spec, allowlist=allowlist)
        began = time.perf_counter()
        pipeline.fit(training.X_train, training.y_train)
        fit = time.perf_counter() - began
        scores = pipeline.predict_proba(training.X_test)[:, 1]
        labels = (scores >= 0.5).astype(int)
        metrics = evaluate(
            spec.task,
            training.y_test,
            Prediction(scores=scores, labels=labels, classes=pipeline.classes_),
            ["roc_auc", "pr_auc", "log_loss", "brier_score", "ks_statistic"],
            resamples=0,
            seed=0,
        )
        values = {k: float(v["value"]) for k, v in metrics.items() if isinstance(v, dict) and v.get("value")}
        params = {
            "C": spec.pipeline.estimator.params["C"],
            "max_iter": 500,
            "estimator": "LogisticRegression",
        }
        return pipeline, params, values, fit

    # MLflow 3.17 saves sklearn models with skops and refuses types it does not trust (numpy.dtype here);
    # the pipeline's types are named once, outside the timing, as the platform's registry does too
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(fitted(0)[0]))

    def log(index: int, requirements: list[str] | None) -> tuple[float, float]:
        """(seconds MLflow took, seconds the fit took) for one model."""
        pipeline, params, metrics, fit = fitted(index)
        began = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()), mlflow.start_run(experiment_id=experiment):
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            mlflow.sklearn.log_model(
                pipeline,
                name="model",
                registered_model_name=MODEL_NAME,
                pip_requirements=requirements,
                skops_trusted_types=trusted,
            )
        return time.perf_counter() - began, fit

    log(0, pinned)  # warm-up: imports, the first registered model (excluded)
    pinned_s, fits = [], []
    for index in range(len(configs)):
        seconds, fit = log(index, pinned)
        pinned_s.append(seconds)
        fits.append(fit)
        if (index + 1) % 10 == 0 or index + 1 == len(configs):
            median = statistics.median(pinned_s) * 1000
            say(f"  MLflow pinned: {index + 1}/{len(configs)} (median so far {median:.0f} ms)")
    default_s = []
    for index in range(defaults):
        default_s.append(log(index, None)[0])
        say(f"  MLflow default {index + 1}/{defaults}: {default_s[-1]:.2f}s")
    return pinned_s, default_s, fits


# ---------------------------------------------------------------------------- report


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def ms(values: Sequence[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms   p90 {p90(values) * 1000:7.1f} ms"


def report(
    platform: PlatformResult,
    mlflow_pinned: list[float],
    mlflow_default: list[float],
    mlflow_fits: list[float],
    fairness: bool,
) -> bool:
    sequential, burst_wall, burst_times = platform.sequential, platform.burst_wall, platform.burst
    n = len(sequential)
    say()
    say(f"== platform: {n} models one at a time through the gateway (fairness {'on' if fairness else 'off'})")
    say(f"  submission -> ModelTrained        {ms([t.trained for t in sequential])}")
    say(f"  submission -> ModelRegistered     {ms([t.registered for t in sequential])}")
    say(f"  submission -> job succeeded       {ms([t.terminal for t in sequential])}")
    say(f"  fit (result.json timings.fit)     {ms([t.fit for t in sequential])}")
    say(f"  overhead = trained - fit          {ms([t.overhead for t in sequential])}")
    say(f"  overhead to registered = reg. - fit {ms([t.overhead_registered for t in sequential])}")
    say("  where the time goes (median per stage; the stages add up to submission -> ModelRegistered):")
    total = 0.0
    for key, label in STAGES:
        median = statistics.median(t.stages[key] for t in sequential)
        total += median
        say(f"    {key:<28} {median * 1000:7.1f} ms   {label}")
    say(f"    {'sum of stage medians':<28} {total * 1000:7.1f} ms")
    if platform.idle_cpu is not None:
        say(f"  idle stack between jobs: {platform.idle_cpu * 100:.1f}% of one core")
    per_hour = len(burst_times) / burst_wall * 3600 if burst_wall else 0.0
    if burst_times:
        say(
            f"  burst: {len(burst_times)} models submitted at once, all registered after {burst_wall:.1f}s "
            f"-> {per_hour:,.0f} models/hour (per model: {ms([t.registered for t in burst_times])})"
        )
    say()
    say(f"== MLflow {_mlflow_version()}, SQLite tracking + registry, the same models fitted in this process")
    say(f"  fit                               {ms(mlflow_fits)}")
    say(f"  log + register, pinned reqs       {ms(mlflow_pinned)}   ({len(mlflow_pinned)} models)")
    if mlflow_default:
        say(f"  log + register, default (infer)   {ms(mlflow_default)}   ({len(mlflow_default)} models)")
    ours = statistics.median(t.overhead for t in sequential)
    ours_registered = statistics.median(t.overhead_registered for t in sequential)
    pinned = statistics.median(mlflow_pinned)
    default = statistics.median(mlflow_default) if mlflow_default else None
    say()
    say(f"  {'':<34}{'median':>12}{'ours / it':>12}{'ours to registered / it':>26}")
    say(
        f"  {'ours: overhead per model':<34}{ours * 1000:>10.1f}ms{'1.00':>12}{ours_registered * 1000:>24.1f}ms"
    )
    say(
        f"  {'MLflow, pinned requirements':<34}{pinned * 1000:>10.1f}ms{ours / pinned:>12.3f}"
        f"{ours_registered / pinned:>26.3f}"
    )
    if default is not None:
        say(
            f"  {'MLflow, default settings':<34}{default * 1000:>10.1f}ms{ours / default:>12.4f}"
            f"{ours_registered / default:>26.4f}"
        )
    say(
        f"  anchors (issue #5): MLflow default {MLFLOW_DEFAULT_S:.1f} s, pinned {MLFLOW_PINNED_S * 1000:.0f} ms"
    )
    overhead_met = ours < pinned
    rate_met = per_hour >= TARGET_PER_HOUR if burst_times else False
    say(
        f"  target: overhead (submission -> training completed, minus the fit) < MLflow pinned "
        f"({pinned * 1000:.1f} ms): {'met' if overhead_met else 'NOT met'} ({ours / pinned:.2f}x)"
    )
    say(
        f"  (to the registered version with its card: {ours_registered * 1000:.1f} ms, "
        f"{ours_registered / pinned:.2f}x MLflow pinned)"
    )
    if burst_times:
        say(
            f"  target: >= {TARGET_PER_HOUR:,} models/hour: {'met' if rate_met else 'NOT met'} "
            f"({per_hour:,.0f}/hour)"
        )
    return overhead_met and rate_met


def _mlflow_version() -> str:
    import mlflow

    return str(mlflow.__version__)


# ---------------------------------------------------------------------------- main


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=50, help="models timed one at a time (default 50)")
    parser.add_argument(
        "--burst", type=int, default=30, help="models submitted at once for models/hour (0: skip)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed models first (default 2)")
    parser.add_argument("--mlflow-default", type=int, default=5, help="MLflow logs with default settings")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow half")
    parser.add_argument(
        "--no-fairness", dest="fairness", action="store_false", help="evaluate without fairness"
    )
    parser.add_argument("--days", type=int, default=7, help="days of features (default 7)")
    parser.add_argument("--applicants", type=int, default=200, help="applicants per day (default 200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--services",
        default="all",
        help="stack services: 'all' (as `pfactory up`) or a comma list (gateway,trainer,registrar at least)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for every service"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one job may take")
    parser.add_argument(
        "--idle-window",
        type=float,
        default=5.0,
        help="seconds the idle stack's CPU use is measured (0: skip)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (stack home, logs, MLflow store)"
    )
    args = parser.parse_args(argv)
    # SIGTERM ends the bench the way Ctrl-C does, through the finally blocks that stop the stack
    signal.signal(signal.SIGTERM, _interrupt)
    if args.models < 1:
        parser.error("--models must be at least 1")
    extra_env = dict(item.split("=", 1) for item in args.env)
    services = None if args.services == "all" else [s.strip() for s in args.services.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="pf-trainer-bench-"))
    home = tmp / ".pfactory"
    try:
        began = time.perf_counter()
        write_features(home, tmp / "raw", args.days, args.applicants, args.seed)
        say(
            f"trainer bench: {args.days} days x {args.applicants} applicants of credit features; "
            f"{args.models} models (LogisticRegression, C log-spaced 1e-2..1e2), fairness "
            f"{'on' if args.fairness else 'off'}; data written in {time.perf_counter() - began:.1f}s; {tmp}"
        )
        configs = [
            model_config(tmp / "raw", args.days, c, fairness=args.fairness) for c in c_values(args.models)
        ]
        stack = Stack(
            home, prefer_default_ports=False, services=services, extra_env=extra_env, health_timeout_s=120
        )
        try:
            began = time.perf_counter()
            stack.start(on_progress=lambda line: say(f"  {line}"))
            say(f"  stack up in {time.perf_counter() - began:.1f}s: {', '.join(stack.pids)}")
            platform = asyncio.run(
                run_platform(stack, configs, args.burst, args.warmup, args.timeout, args.idle_window)
            )
        finally:
            codes = stack.stop()
            say(f"  stack stopped: {codes}")
        pinned: list[float] = []
        default: list[float] = []
        fits: list[float] = []
        if not args.no_mlflow:
            say("MLflow: the same models, logged and registered on SQLite")
            pinned, default, fits = run_mlflow(tmp / "mlflow", home, configs, args.mlflow_default)
        else:
            pinned = [MLFLOW_PINNED_S]
        met = report(platform, pinned, default, fits or [0.0], args.fairness)
        return 0 if met else 1
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
