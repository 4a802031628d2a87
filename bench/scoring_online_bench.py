"""Online scoring benchmark: ``wrk`` on loopback against the scorer, a bare FastAPI endpoint and MLflow.

Fits the test suite's credit model (imputer + scaler + one-hot encoder + LogisticRegression on the
example credit features, ``tests/workers/scorer/credit_model.py``) and commits it live, with its
reference and signature, into a temp embedded registry. In the same run, three servers of that one
fitted pipeline, each a single uvicorn process on 127.0.0.1, started and stopped one after the other:

* scorer: ``python -m pfactory.scorer online`` (``PF_ONLINE_*``, the model preloaded, no auth,
  default micro-batching), ``POST /v1/models/<name>/predict`` with ``{"rows": [...]}``: input
  validation against the signature, predictions of the live version, concurrent requests scored
  together in one model call;
* bare: a FastAPI endpoint in this file holding the same estimator in memory: ``{"rows": [...]}`` ->
  ``DataFrame`` -> ``predict_proba``, no validation (the anchor's design);
* mlflow: ``mlflow models serve --env-manager local`` of the same pipeline logged with
  ``mlflow.sklearn.log_model`` (signature inferred, requirements pinned) into a temp SQLite store,
  ``POST /invocations`` with ``{"dataframe_records": [...]}`` (pyfunc calls ``predict``); its
  defaults: one uvicorn worker, access log on.

Per arm and request size (1 row, 100 rows): one request checked for a 200 and an answer per row, a
``--warmup`` wrk run, then ``wrk -t2 -c16 -d10s --latency`` (Lua script posting a fixed JSON body).
Any non-2xx response fails the arm. Every server is stopped at the end, also on Ctrl-C or SIGTERM.

    uv run python bench/scoring_online_bench.py
    uv run python bench/scoring_online_bench.py --duration 3 --warmup 1 --no-mlflow

Anchors (issue #6, this machine, ``wrk -t2 -c16``): mlflow models serve 117 req/s, p99 231 ms for one
row; a bare FastAPI endpoint calling predict_proba on the same pre-loaded model 1,677 req/s, p99 10.5 ms.
Target: the scorer at >= 80% of the bare endpoint's requests/s (measured in the same run) with p99 <= 15 ms
for 1 row, input validation included.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.workers.scorer.credit_model import MODEL_NAME  # noqa: E402

MLFLOW_RPS, MLFLOW_P99_MS = 117.0, 231.0
BARE_RPS, BARE_P99_MS = 1677.0, 10.5
TARGET_RATIO, TARGET_P99_MS = 0.80, 15.0
SIZES = (1, 100)
START = dt.date(2024, 1, 1)
DAYS = 2


def say(line: str = "") -> None:
    print(line, flush=True)


# ---------------------------------------------------------------------------- the bare endpoint


class BareRows(BaseModel):
    """The bare endpoint's body: rows as JSON objects, nothing checked beyond that."""

    rows: list[dict[str, Any]]


def serve_bare(work: Path, port: int) -> None:
    """The anchor's design: FastAPI, the estimator pre-loaded, predict_proba on the posted rows.

    ``async def``, so it predicts on the event loop with no thread hop (the scorer does the same for
    up to 100 rows): the faster of FastAPI's two styles, so the stricter baseline.
    """
    import pandas as pd  # type: ignore[import-untyped]
    import uvicorn
    from fastapi import FastAPI

    estimator = registered_estimator(work / "registry", MODEL_NAME)
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: BareRows) -> dict[str, list[float]]:
        return {"scores": estimator.predict_proba(pd.DataFrame(body.rows))[:, 1].tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------------------- setup


def prepare(work: Path, kind: str) -> tuple[list[dict[str, Any]], Any, Any]:
    """Fit and commit the model live; return request rows, the training inputs and the estimator.

    ``credit``: the test suite's pipeline on all inputs (one-hot encoder included); ``numeric``: a
    median imputer, a scaler and a LogisticRegression on the six numeric columns (a sub-millisecond predict).
    """
    from tests.workers.scorer.credit_model import NOT_INPUTS, NUMERIC, fit_and_register, training_frame
    from tests.workers.trainer.credit_data import write_credit_store

    raw, store = write_credit_store(work, start=START, days=DAYS, applicants_per_day=300)
    if kind == "credit":
        fit_and_register(raw, store, work / "registry", START, DAYS)
    frame = training_frame(store, START, DAYS)
    inputs = frame[[c for c in frame.columns if c not in NOT_INPUTS]]
    if kind == "numeric":
        inputs = inputs[NUMERIC]
        _commit_numeric(raw, store, work / "registry")
    rows: list[dict[str, Any]] = json.loads(inputs.head(max(SIZES)).to_json(orient="records"))  # NaN -> null
    return rows, inputs, registered_estimator(work / "registry", MODEL_NAME)


def _commit_numeric(raw: Path, store: Path, registry_dir: Path) -> None:
    """Imputer + scaler + LogisticRegression on the numeric columns, committed live with its reference."""
    import asyncio

    import pandas as pd
    from sklearn.impute import SimpleImputer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]
    from tests.workers.scorer.credit_model import NUMERIC, PAIR, day_labels, training_frame
    from tests.workers.scorer.registered import commit_version
    from tests.workers.trainer.credit_data import credit_config

    from pfactory.features.drift import build_reference
    from pfactory.registry.loading import LoaderIndex
    from pfactory.registry.wiring import RegistrySettings, build_registry

    days = [START + dt.timedelta(days=n) for n in range(DAYS)]
    joined = training_frame(store, START, DAYS).merge(
        pd.concat([day_labels(raw, ds) for ds in days]), on="applicant_id"
    )
    inputs = joined[NUMERIC]
    pipeline = make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=500)
    )
    pipeline.fit(inputs, joined["defaulted_12m"])
    reference = build_reference(inputs, pipeline.predict_proba(inputs)[:, 1])
    config = credit_config(raw, start=START, end=days[-1])

    async def commit() -> None:
        registry = await build_registry(RegistrySettings(data_dir=registry_dir))
        try:
            index: LoaderIndex = registry.index  # type: ignore[assignment]
            await commit_version(
                index, registry.artifacts, PAIR, pipeline, reference=reference, config=config, live=True
            )
        finally:
            await registry.close()

    asyncio.run(commit())


def registered_estimator(registry_dir: Path, model: str) -> Any:
    """The live version's estimator, loaded through the registry (sha256 and type checks): what every arm serves."""
    import asyncio

    from pfactory.registry.loading import LoaderIndex, VersionLoader
    from pfactory.registry.wiring import RegistrySettings, build_registry

    async def load() -> Any:
        registry = await build_registry(RegistrySettings(data_dir=registry_dir))
        try:
            index: LoaderIndex = registry.index  # type: ignore[assignment]
            loader = VersionLoader(index, registry.artifacts)
            return (await loader.load(await loader.resolve(model))).estimator
        finally:
            await registry.close()

    return asyncio.run(load())


def log_mlflow(work: Path, estimator: Any, inputs: Any) -> str:
    """Log the estimator with ``mlflow.sklearn`` into a SQLite store; returns the model URI."""
    os.environ["MLFLOW_UV_AUTO_DETECT"] = "false"
    import logging
    import warnings

    import mlflow
    import sklearn  # type: ignore[import-untyped]
    import skops.io  # type: ignore[import-untyped]
    from mlflow.models import infer_signature

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # store creation chatter
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    mlflow.set_experiment("bench-online")
    with warnings.catch_warnings(), mlflow.start_run():
        warnings.simplefilter("ignore")  # MLflow's advice about integer columns and the like
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=infer_signature(inputs, estimator.predict(inputs)),
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            # MLflow 3.17 saves with skops and refuses types it does not trust (numpy.dtype here)
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(estimator)),
        )
    return str(info.model_uri)


# ---------------------------------------------------------------------------- servers and load


class ServerFailed(RuntimeError):
    """A server exited or never became ready; the message holds the end of its log."""


@contextlib.contextmanager
def server(name: str, command: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    """Start a server in its own process group; wait for ``ready_url``; stop the group on exit."""
    with log.open("w") as sink:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise ServerFailed(
                    f"{name} exited with {process.returncode}; its log ends:\n{log.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise ServerFailed(
                    f"{name} not ready at {ready_url} after 120 s; its log ends:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, body: dict[str, Any], seconds: float, work: Path) -> dict[str, float]:
    """One bounded ``wrk -t2 -c16`` run posting ``body``; requests/s, p50 and p99 in ms."""
    body_file = work / "body.json"
    body_file.write_text(json.dumps(body))
    script = work / "post.lua"
    script.write_text(
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    command = ["wrk", "-t2", "-c16", f"-d{seconds:g}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad or "Socket errors" in out:
        raise SystemExit(f"wrk against {url} saw failures:\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
    }


def measure(
    name: str, url: str, body_of: Any, answers: Any, args: argparse.Namespace, work: Path
) -> dict[int, dict[str, float]]:
    """Check one answer, warm up, then one timed wrk run per request size."""
    figures = {}
    for size in SIZES:
        body = body_of(size)
        response = httpx.post(url, json=body, timeout=30)
        if response.status_code != 200 or answers(response.json()) != size:
            raise SystemExit(f"{name}: {size} row(s) answered {response.status_code}: {response.text[:500]}")
        if args.warmup > 0:
            wrk(url, body, args.warmup, work)
        figures[size] = wrk(url, body, args.duration, work)
        f = figures[size]
        say(
            f"  {name:<7} {size:>3} row(s): {f['rps']:>8,.0f} req/s  p50 {f['p50']:6.1f} ms  p99 {f['p99']:6.1f} ms"
            f"  (load average {os.getloadavg()[0]:.2f})"
        )
    return figures


# ---------------------------------------------------------------------------- main


def report(results: dict[str, dict[int, dict[str, float]]], skipped: dict[str, str]) -> bool:
    say()
    say(f"{'arm':<8}{'rows':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'/ bare':>9}   anchor")
    anchors = {("mlflow", 1): f"{MLFLOW_RPS:.0f} req/s, p99 {MLFLOW_P99_MS:.0f} ms",
               ("bare", 1): f"{BARE_RPS:,.0f} req/s, p99 {BARE_P99_MS} ms"}  # fmt: skip
    for arm, by_size in results.items():
        for size, f in by_size.items():
            bare = results.get("bare", {}).get(size)
            share = f"{f['rps'] / bare['rps']:.2f}" if bare else "-"
            say(
                f"{arm:<8}{size:>5}{f['rps']:>10,.0f}{f['p50']:>9.1f}{f['p99']:>9.1f}{share:>9}   "
                f"{anchors.get((arm, size), '')}"
            )
    for arm, reason in skipped.items():
        say(f"{arm:<8} skipped: {reason}")
    ours, bare = results["scorer"][1], results["bare"][1]
    ratio = ours["rps"] / bare["rps"]
    met = ratio >= TARGET_RATIO and ours["p99"] <= TARGET_P99_MS
    say(
        f"target (1 row): >= {TARGET_RATIO:.0%} of the bare endpoint's req/s and p99 <= {TARGET_P99_MS:.0f} ms: "
        f"{'met' if met else 'NOT met'} ({ratio:.0%}, p99 {ours['p99']:.1f} ms)"
    )
    if "mlflow" in results:
        say(f"scorer / mlflow (1 row): {ours['rps'] / results['mlflow'][1]['rps']:.1f}x requests/s")
    return met


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of wrk per arm and size (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="untimed wrk seconds first (default 2; 0: none)"
    )
    parser.add_argument(
        "--model",
        choices=("credit", "numeric"),
        default="credit",
        help="credit: the suite's one-hot + LR pipeline (default); numeric: imputer + scaler + LR on 6 numeric columns",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="skip the mlflow models serve arm")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (registry, logs, MLflow store)"
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.work, args.serve_bare)
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (the anchors were measured with it)")
    signal.signal(signal.SIGTERM, _interrupt)  # stops the servers through the finally blocks
    from pfactory.bus.embedded import free_port

    work = Path(tempfile.mkdtemp(prefix="pf-scoring-online-bench-"))
    try:
        began = time.perf_counter()
        rows, inputs, estimator = prepare(work, args.model)
        model = MODEL_NAME
        say(
            f"online scoring bench: {args.model} model fitted and committed in {time.perf_counter() - began:.1f}s; {work}"
        )
        say(
            f"load: wrk -t2 -c16, {args.duration:g}s per arm and size after {args.warmup:g}s warm-up, loopback"
        )
        results: dict[str, dict[int, dict[str, float]]] = {}
        say(
            f"load average before measuring (1/5/15 min): {'/'.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
        )
        skipped: dict[str, str] = {}

        port = free_port()
        env = {
            "PF_ONLINE_HOST": "127.0.0.1",
            "PF_ONLINE_PORT": str(port),
            "PF_ONLINE_AUTH": "none",
            "PF_ONLINE_PRELOAD": json.dumps([model]),
            "PF_REGISTRY_DATA_DIR": str(work / "registry"),
        }
        command = [sys.executable, "-m", "pfactory.scorer", "online"]
        base = f"http://127.0.0.1:{port}"
        with server("scorer", command, env, f"{base}/ready", work / "scorer.log"):
            results["scorer"] = measure(
                "scorer", f"{base}/v1/models/{model}/predict", lambda n: {"rows": rows[:n]},
                lambda answer: len(answer["predictions"]), args, work,
            )  # fmt: skip

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, __file__, "--serve-bare", str(port), "--work", str(work)]
        with server("bare", command, {}, f"{base}/docs", work / "bare.log"):
            results["bare"] = measure(
                "bare", f"{base}/predict", lambda n: {"rows": rows[:n]},
                lambda answer: len(answer["scores"]), args, work,
            )  # fmt: skip

        if args.no_mlflow:
            skipped["mlflow"] = "--no-mlflow"
        else:
            uri = log_mlflow(work, estimator, inputs)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
            command = [mlflow_bin, "models", "serve", "-m", uri, "--env-manager", "local",
                       "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
            env = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
            try:
                with server("mlflow", command, env, f"{base}/ping", work / "mlflow.log"):
                    results["mlflow"] = measure(
                        "mlflow", f"{base}/invocations", lambda n: {"dataframe_records": rows[:n]},
                        lambda answer: len(answer["predictions"]), args, work,
                    )  # fmt: skip
            except ServerFailed as error:  # e.g. a package mlflow-skinny lacks: say which, keep the rest
                skipped["mlflow"] = str(error).splitlines()[0]
                say(f"  mlflow arm skipped: {error}")
        return 0 if report(results, skipped) else 1
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
