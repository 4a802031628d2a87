"""The online prediction API over a real registry holding a fitted credit model.

Covered: predictions by live version, number and alias that match the registered estimator; every
kind of input problem reported together in one 422; a malformed body, a non-JSON content type and
a wrong method refused as FastAPI would; the predict route in the OpenAPI schema; row limits; 404s
naming what exists; API keys; a moved alias served after the refresh interval by the real app
under uvicorn; /health and /ready with a preloaded model; ``python -m pfactory.scorer online`` as a
process; a timing loop; the latency line per scored request and the rows counted per version.
Batching under concurrency: ``test_online_batching.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from sklearn.base import clone

from pfactory.bus.embedded import free_port
from pfactory.registry.loading import LoaderIndex, VersionLoader
from pfactory.registry.wiring import RegistrySettings, build_registry
from pfactory.scorer.online import build_app
from pfactory.scorer.settings import OnlineSettings
from pfactory.scorer.signature import RowsRejected, Signature
from pfactory.telemetry import catalog
from pfactory.telemetry.settings import TelemetrySettings
from tests.utils.statsd import capturing_statsd
from tests.workers.scorer.credit_model import (
    MODEL_NAME,
    NOT_INPUTS,
    PAIR,
    CreditModel,
    day_labels,
    fit_and_register,
    training_frame,
)
from tests.workers.scorer.registered import commit_version
from tests.workers.support import http_status, wait_for
from tests.workers.trainer.credit_data import write_credit_store

pytestmark = pytest.mark.integration

START = dt.date(2024, 1, 1)
DAYS = 2
URL = f"/v1/models/{MODEL_NAME}/predict"
SECRET = "s3cr3t-part-of-the-key"
KEY = f"pf_0123456789ab_{SECRET}"


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CreditModel]:
    root = tmp_path_factory.mktemp("online")
    raw, store = write_credit_store(root, start=START, days=DAYS, applicants_per_day=300)
    return raw, store, fit_and_register(raw, store, root / "registry", START, DAYS)


@pytest.fixture
async def registry_dir(credit: tuple[Path, Path, CreditModel], tmp_path: Path) -> Path:
    """A private registry holding the fitted credit model live as version 1, so tests that move
    aliases or add versions stay apart (artifact URIs are absolute: a copied folder would not do)."""
    source = await build_registry(RegistrySettings(data_dir=credit[2].registry_dir))
    target_dir = tmp_path / "registry"
    target = await build_registry(RegistrySettings(data_dir=target_dir))
    try:
        index: LoaderIndex = source.index  # type: ignore[assignment]
        loaded = await VersionLoader(index, source.artifacts).load(credit[2].record)
        await commit_version(
            target.index,  # type: ignore[arg-type]
            target.artifacts,
            PAIR,
            loaded.estimator,
            reference=loaded.reference,
            config=loaded.record.config,
            live=True,
        )
    finally:
        await source.close()
        await target.close()
    return target_dir


def _rows(store: Path, count: int) -> list[dict[str, Any]]:
    """Real feature rows of the first day as JSON objects (nulls as null)."""
    frame = training_frame(store, START, 1).head(count)
    inputs = frame[[c for c in frame.columns if c not in NOT_INPUTS]]
    records: list[dict[str, Any]] = inputs.astype(object).where(inputs.notna(), None).to_dict("records")
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in records]


def _settings(registry_dir: Path, **fields: Any) -> OnlineSettings:
    return OnlineSettings(registry=RegistrySettings(data_dir=registry_dir), **fields)


@contextlib.asynccontextmanager
async def _client(settings: OnlineSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://online") as client:
            yield client


async def _expected_scores(registry_dir: Path, rows: list[dict[str, Any]], version: int) -> list[float]:
    """The registered estimator's positive-class probabilities, loaded independently of the API."""
    registry = await build_registry(RegistrySettings(data_dir=registry_dir))
    try:
        index: LoaderIndex = registry.index  # type: ignore[assignment]
        loader = VersionLoader(index, registry.artifacts)
        loaded = await loader.load(await loader.resolve(MODEL_NAME, version=version))
        frame = pd.DataFrame(rows)[loaded.feature_names].astype(
            {c["name"]: c["dtype"] for c in loaded.signature if c["dtype"] != "object"}
        )
        return [float(p) for p in loaded.estimator.predict_proba(frame)[:, 1]]
    finally:
        await registry.close()


async def _move_alias(registry_dir: Path, alias: str, version: int) -> None:
    registry = await build_registry(RegistrySettings(data_dir=registry_dir))
    try:
        await registry.index.move_alias(PAIR, alias, version, actor="test")
    finally:
        await registry.close()


async def test_predicts_the_live_version_by_default_by_number_and_by_alias(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    rows = _rows(credit[1], 5)
    expected = await _expected_scores(registry_dir, rows, 1)
    await _move_alias(registry_dir, "champion", 1)
    async with _client(_settings(registry_dir)) as client:
        for selector in ({}, {"version": 1}, {"alias": "champion"}, {"feature_set": str(PAIR.feature_set)}):
            answer = await client.post(f"/v1/models/{MODEL_NAME}/predict", json={"rows": rows, **selector})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["model"], body["feature_set"], body["version"]) == (
                MODEL_NAME,
                str(PAIR.feature_set),
                1,
            )
            scores = [p["score"] for p in body["predictions"]]
            assert scores == pytest.approx(expected, abs=1e-9)
            assert [p["label"] for p in body["predictions"]] == [int(s > 0.5) for s in expected]


async def test_every_input_problem_is_reported_in_one_answer(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    good, wrong_type, null_row, missing, unknown = _rows(credit[1], 5)
    wrong_type["income"] = "lots"
    null_row["n_open_accounts"] = None
    del missing["age"]
    unknown["incme"] = unknown.pop("income")
    async with _client(_settings(registry_dir)) as client:
        answer = await client.post(
            f"/v1/models/{MODEL_NAME}/predict", json={"rows": [good, wrong_type, null_row, missing, unknown]}
        )
    assert answer.status_code == 422, answer.text
    problems = {(p["row"], p["column"]): p for p in answer.json()["problems"]}
    assert answer.json()["problems_total"] == len(problems)
    assert "a string 'lots'" in problems[(1, "income")]["problem"]
    assert "a number" in problems[(1, "income")]["expected"]
    assert "null" in problems[(2, "n_open_accounts")]["problem"]
    assert "missing" in problems[(3, "age")]["problem"]
    assert "did you mean 'income'?" in problems[(4, "incme")]["problem"]
    # income held no nulls in training, so the renamed column is also missing from row 4
    assert {row for row, _ in problems} == {1, 2, 3, 4}


async def test_bodies_that_are_not_predict_requests_are_refused_as_fastapi_would(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    rows = _rows(credit[1], 1)
    async with _client(_settings(registry_dir)) as client:
        broken = await client.post(URL, content=b'{"rows": [', headers={"content-type": "application/json"})
        extra = await client.post(URL, json={"rows": rows, "versoin": 1})
        not_rows = await client.post(URL, json={"rows": [1, 2]})
        form = await client.post(
            URL, content=b"rows=1", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        json_with_charset = await client.post(
            URL,
            content=json.dumps({"rows": rows}),
            headers={"content-type": "application/json; charset=utf-8"},
        )
        wrong_method = await client.get(URL)
        document = (await client.get("/openapi.json")).json()
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    assert extra.status_code == 422
    assert [(e["type"], e["loc"]) for e in extra.json()["detail"]] == [
        ("extra_forbidden", ["body", "versoin"])
    ]
    assert not_rows.status_code == 422
    assert {tuple(e["loc"]) for e in not_rows.json()["detail"]} == {("body", "rows", 0), ("body", "rows", 1)}
    assert form.status_code == 415 and "Content-Type: application/json" in form.json()["detail"]
    assert json_with_charset.status_code == 200, json_with_charset.text
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    operation = document["paths"]["/v1/models/{name}/predict"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictRequest"
    )
    assert set(document["components"]["schemas"]["PredictRequest"]["properties"]) == {
        "rows",
        "version",
        "alias",
        "feature_set",
    }
    assert {"/health", "/ready"} <= set(document["paths"])


async def test_row_limits_and_unknown_names_are_refused_with_what_exists(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    rows = _rows(credit[1], 3)
    url = f"/v1/models/{MODEL_NAME}/predict"
    async with _client(_settings(registry_dir, max_rows=2)) as client:
        empty = await client.post(url, json={"rows": []})
        too_many = await client.post(url, json={"rows": rows})
        no_model = await client.post("/v1/models/credit-defualt/predict", json={"rows": rows[:1]})
        no_version = await client.post(url, json={"rows": rows[:1], "version": 7})
        no_alias = await client.post(url, json={"rows": rows[:1], "alias": "champion"})
        both = await client.post(url, json={"rows": rows[:1], "alias": "champion", "version": 1})
        bad_pair = await client.post(url, json={"rows": rows[:1], "feature_set": "credit_features"})
    assert (empty.status_code, too_many.status_code) == (422, 422)
    assert "between 1 and 2 rows; got 3" in too_many.json()["detail"]
    assert no_model.status_code == 404 and MODEL_NAME in no_model.json()["detail"]
    assert no_version.status_code == 404 and "no version 7" in no_version.json()["detail"]
    assert "1 (live)" in no_version.json()["detail"]
    assert no_alias.status_code == 404 and "'champion'" in no_alias.json()["detail"]
    assert both.status_code == 422 and "not both" in both.json()["detail"]
    assert bad_pair.status_code == 422 and "name@version" in bad_pair.json()["detail"]


async def test_api_keys_are_checked_against_the_accepted_hashes(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    body = {"rows": _rows(credit[1], 1)}
    url = f"/v1/models/{MODEL_NAME}/predict"
    settings = _settings(registry_dir, api_key_sha256s=[hashlib.sha256(SECRET.encode()).hexdigest()])
    assert settings.auth == "keys"
    async with _client(settings) as client:
        missing = await client.post(url, json=body)
        wrong = await client.post(url, json=body, headers={"X-API-Key": "pf_0123456789ab_guess"})
        by_header = await client.post(url, json=body, headers={"X-API-Key": KEY})
        by_bearer = await client.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"})
        health = await client.get("/health")
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert "X-API-Key" in missing.json()["detail"]
    assert (by_header.status_code, by_bearer.status_code, health.status_code) == (200, 200, 200)


def test_key_checking_without_hashes_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="PF_ONLINE_API_KEY_SHA256S"):
        OnlineSettings(auth="keys")
    with pytest.raises(ValidationError, match="not a sha256 hex digest"):
        OnlineSettings(api_key_sha256s=["abc"])
    assert OnlineSettings().auth == "none"


@contextlib.asynccontextmanager
async def _uvicorn(settings: OnlineSettings, app: FastAPI | None = None) -> AsyncIterator[str]:
    """The real app (``app``, else one built from ``settings``) under uvicorn on loopback, in this event loop."""
    server = uvicorn.Server(
        uvicorn.Config(app or build_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert not task.done(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await task


async def _commit_refit(raw: Path, store: Path, registry_dir: Path) -> int:
    """A second version: the same pipeline refitted with heavy regularisation (different scores)."""
    registry = await build_registry(RegistrySettings(data_dir=registry_dir))
    try:
        index: LoaderIndex = registry.index  # type: ignore[assignment]
        loaded = await VersionLoader(index, registry.artifacts).load(await index.get(PAIR, 1))
        rows = training_frame(store, START, DAYS).merge(
            pd.concat([day_labels(raw, START + dt.timedelta(days=n)) for n in range(DAYS)]), on="applicant_id"
        )
        refit = clone(loaded.estimator).set_params(estimator__C=1e-4)
        refit.fit(rows[loaded.feature_names], rows["defaulted_12m"])
        record = await commit_version(
            index, registry.artifacts, PAIR, refit, reference=loaded.reference, config=loaded.record.config
        )
        return record.version
    finally:
        await registry.close()


async def test_a_moved_alias_is_served_after_the_refresh_interval(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    raw, store, _ = credit
    rows = _rows(store, 2)
    await _move_alias(registry_dir, "champion", 1)
    settings = _settings(registry_dir, port=free_port(), reload_interval_s=0.2, preload=[MODEL_NAME])
    async with _uvicorn(settings) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/health")).status_code == 200
        deadline = time.monotonic() + 20
        while (await client.get("/ready")).status_code != 200:
            assert time.monotonic() < deadline, "not ready within 20 s"
            await asyncio.sleep(0.05)
        before = await client.post(
            f"/v1/models/{MODEL_NAME}/predict", json={"rows": rows, "alias": "champion"}
        )
        assert before.json()["version"] == 1
        new_version = await _commit_refit(raw, store, registry_dir)
        await _move_alias(registry_dir, "champion", new_version)
        deadline = time.monotonic() + 20
        while True:
            after = await client.post(
                f"/v1/models/{MODEL_NAME}/predict", json={"rows": rows, "alias": "champion"}
            )
            if after.json()["version"] == new_version:
                break
            assert time.monotonic() < deadline, "the moved alias was not served within 20 s"
            await asyncio.sleep(0.05)
        live = await client.post(f"/v1/models/{MODEL_NAME}/predict", json={"rows": rows})
    expected = await _expected_scores(registry_dir, rows, new_version)
    assert [p["score"] for p in after.json()["predictions"]] == pytest.approx(expected, abs=1e-9)
    assert [p["score"] for p in after.json()["predictions"]] != [
        p["score"] for p in before.json()["predictions"]
    ]
    assert live.json()["version"] == 1  # the live version did not move


def test_python_m_scorer_online_serves_the_api(
    credit: tuple[Path, Path, CreditModel], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PF_REGISTRY_DATA_DIR": str(credit[2].registry_dir),
        "PF_ONLINE_PORT": str(port),
        "PF_ONLINE_PRELOAD": f'["{MODEL_NAME}"]',
    }
    log_path = tmp_path / "online.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pfactory.scorer", "online"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: http_status(f"{url}/ready") == 200, 60, "the online API to be ready", log_path.read_text
        )
        answer = httpx.post(f"{url}/v1/models/{MODEL_NAME}/predict", json={"rows": _rows(credit[1], 1)})
        assert answer.status_code == 200, answer.text
        assert 0.0 <= answer.json()["predictions"][0]["score"] <= 1.0
    finally:
        process.terminate()
        process.wait(15)
    wrong = subprocess.run(
        [sys.executable, "-m", "pfactory.scorer", "serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert wrong.returncode == 2 and "usage: python -m pfactory.scorer [online]" in wrong.stderr


async def test_per_request_time_of_one_row_in_process(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    """Prints the in-process cost of a 1-row request (validation included); no timed assertion."""
    body = {"rows": _rows(credit[1], 1)}
    async with _client(_settings(registry_dir)) as client:
        for _ in range(20):  # warm-up: load, first DataFrame, caches
            await client.post(f"/v1/models/{MODEL_NAME}/predict", json=body)
        count = 300
        started = time.perf_counter()
        for _ in range(count):
            answer = await client.post(f"/v1/models/{MODEL_NAME}/predict", json=body)
        elapsed = time.perf_counter() - started
    assert answer.status_code == 200 and math.isfinite(answer.json()["predictions"][0]["score"])
    print(f"\nonline 1-row predict through ASGITransport: {elapsed / count * 1e3:.3f} ms per request")


async def test_each_scored_request_sends_its_latency_and_rows_are_sent_per_version_in_bulk(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    rows = _rows(credit[1], 3)
    latency, counted = catalog.SCORING_LATENCY.name, catalog.SCORING_ROWS.name
    with capturing_statsd() as statsd:
        telemetry = TelemetrySettings(statsd_port=statsd.port, env="test")
        async with _client(_settings(registry_dir, telemetry=telemetry)) as client:
            for body in ({"rows": rows[:1]}, {"rows": rows, "version": 1}, {"rows": [{"age": "old"}]}):
                await client.post(URL, json=body)
            statsd.wait_for(lambda: len(statsd.named(latency)) == 2, 5, "two latency lines")
            assert statsd.named(counted) == []  # rows are added up in memory, not sent per request
        statsd.wait_for(lambda: bool(statsd.named(counted)), 5, "the rows, sent when the app stops")

    tags = {
        "model": MODEL_NAME,
        "model_version": "1",
        "mode": "online",
        "service": "scorer-online",
        "env": "test",
    }
    timed = statsd.named(latency, **tags)
    assert len(timed) == 2 and all(line.kind == "d" and line.value > 0 for line in timed)  # not the 422
    [total] = statsd.named(counted, **tags, feature_set=str(PAIR.feature_set))
    assert (total.value, total.kind) == (4, "c")


async def test_versions_alternate_correctly_when_the_cache_holds_one(
    credit: tuple[Path, Path, CreditModel], registry_dir: Path
) -> None:
    raw, store, _ = credit
    rows = _rows(store, 1)
    second = await _commit_refit(raw, store, registry_dir)
    expected = {v: await _expected_scores(registry_dir, rows, v) for v in (1, second)}
    async with _client(_settings(registry_dir, model_cache_size=1)) as client:
        for version in (1, second, 1, second, None):
            answer = await client.post(
                f"/v1/models/{MODEL_NAME}/predict", json={"rows": rows, "version": version}
            )
            served = answer.json()["version"]
            assert served == (version or 1)
            assert [p["score"] for p in answer.json()["predictions"]] == pytest.approx(
                expected[served], abs=1e-9
            )


def test_signature_types_nulls_and_timestamps() -> None:
    signature = Signature(
        [
            {"name": "count", "dtype": "int64", "nullable": False},
            {"name": "maybe_count", "dtype": "Int64", "nullable": True},
            {"name": "flag", "dtype": "bool", "nullable": False},
            {"name": "seen_at", "dtype": "datetime64[ns]", "nullable": False},
            {"name": "ratio", "dtype": "float64", "nullable": True},
        ]
    )
    good: list[dict[str, Any]] = [
        {"count": 3, "maybe_count": None, "flag": True, "seen_at": "2024-01-02T03:04:05", "ratio": 0.5},
        {"count": 4.0, "flag": False, "seen_at": "2024-01-03"},  # absent nullable columns are null
    ]
    signature.check(good)
    frame = signature.frame(good)
    assert list(frame.columns) == ["count", "maybe_count", "flag", "seen_at", "ratio"]
    assert [str(t) for t in frame.dtypes] == ["int64", "Int64", "bool", "datetime64[ns]", "float64"]
    assert frame["ratio"].isna().tolist() == [False, True]
    with pytest.raises(RowsRejected) as rejected:
        signature.check(
            [{"count": True, "flag": 1, "seen_at": "x", "ratio": 2.5}, {"count": 1.5, "flag": True}]
        )
    found = {(p.row, p.column): p.problem for p in rejected.value.problems}
    assert set(found) == {(0, "count"), (0, "flag"), (1, "count"), (1, "seen_at")}
    assert found[(0, "count")] == "a boolean True"
    with pytest.raises(RowsRejected) as unparsable:
        signature.frame([good[0], {**good[1], "seen_at": "not a date"}])
    assert (unparsable.value.problems[0].row, unparsable.value.problems[0].column) == (1, "seen_at")
    too_big = [good[0], {**good[1], "count": 2**63}]  # an integer, so it passes the check
    signature.check(too_big)
    with pytest.raises(RowsRejected) as overflow:
        signature.frame(too_big)
    [problem] = overflow.value.problems
    assert (problem.row, problem.column, problem.expected) == (1, "count", "an integer (int64)")
    assert problem.problem.startswith("9223372036854775808 does not fit")
