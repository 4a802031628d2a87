"""Micro-batching of online predictions: concurrent requests share model calls and still get their own answers.

The batcher alone (a real event loop, a plain scoring function that records its calls): batches
form under concurrency, a lone request is scored within a few loop turns, ``max_rows`` caps a
batch, a request whose rows break the model fails alone. Then the real API under uvicorn on
127.0.0.1 with the registered credit model: many concurrent requests answer exactly as they do
one at a time and as the registered estimator does, in fewer model calls than requests; a request
the model refuses fails alone with its own 422 in a burst of good ones; requests that follow an
alias while it moves each get the scores of the version they report.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pfactory.bus.embedded import free_port
from pfactory.scorer.batching import BatchStats, PredictionBatcher, Scores
from pfactory.scorer.online import build_app
from pfactory.scorer.served import ServedModels
from tests.workers.scorer.credit_model import MODEL_NAME, CreditModel
from tests.workers.scorer.test_online import (
    _commit_refit,
    _expected_scores,
    _move_alias,
    _rows,
    _settings,
    _uvicorn,
    credit,  # noqa: F401  (fixture)
    registry_dir,  # noqa: F401  (fixture)
)

URL = f"/v1/models/{MODEL_NAME}/predict"


class RecordingScorer:
    """Scores a row as ``row["x"] / 10``; refuses rows with ``x < 0``, as a model refuses bad input."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # rows per call

    def __call__(self, rows: list[dict[str, Any]]) -> Scores:
        self.calls.append(len(rows))
        if any(row["x"] < 0 for row in rows):
            raise ValueError(f"x must not be negative; got {min(row['x'] for row in rows)}")
        return [row["x"] / 10 for row in rows], [int(row["x"] >= 5) for row in rows]


async def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    scorer = RecordingScorer()
    batcher = PredictionBatcher(scorer, max_rows=1024)
    requests = [[{"x": float(i)}, {"x": float(i) + 0.5}] for i in range(10)]
    answers = await asyncio.gather(*(batcher.submit(rows) for rows in requests))
    assert scorer.calls == [20]
    for rows, (scores, labels) in zip(requests, answers, strict=True):
        assert scores == [row["x"] / 10 for row in rows]
        assert labels == [int(row["x"] >= 5) for row in rows]
    assert (batcher.stats.predictions, batcher.stats.requests, batcher.stats.largest_batch_requests) == (
        1,
        10,
        10,
    )


async def test_a_lone_request_is_scored_within_a_few_loop_turns() -> None:
    """No timer: an idle batcher adds a few event-loop turns (microseconds), not a wait."""
    batcher = PredictionBatcher(RecordingScorer(), max_rows=1024)
    answer = batcher.submit([{"x": 3.0}])
    turns = 0
    while not answer.done():
        await asyncio.sleep(0)
        turns += 1
        assert turns <= 5, "the lone request was not scored within 5 turns of the event loop"
    assert answer.result() == ([0.3], [0])


async def test_max_rows_caps_a_batch_and_the_rest_follow() -> None:
    scorer = RecordingScorer()
    batcher = PredictionBatcher(scorer, max_rows=5)
    requests = [[{"x": float(i)}] * 2 for i in range(6)] + [[{"x": 9.0}] * 7]  # the last alone exceeds it
    answers = await asyncio.gather(*(batcher.submit(rows) for rows in requests))
    assert scorer.calls == [4, 4, 4, 7]  # two 2-row requests fit in 5 rows, a third does not
    assert [scores for scores, _ in answers] == [[row["x"] / 10 for row in rows] for rows in requests]
    with pytest.raises(ValueError, match="at least 1"):
        PredictionBatcher(scorer, max_rows=0)


async def test_a_request_that_breaks_the_model_fails_alone() -> None:
    scorer = RecordingScorer()
    batcher = PredictionBatcher(scorer, max_rows=1024)
    requests = [[{"x": 1.0}], [{"x": 2.0}, {"x": -7.0}], [{"x": 3.0}]]
    answers = await asyncio.gather(*(batcher.submit(rows) for rows in requests), return_exceptions=True)
    assert answers[0] == ([0.1], [0]) and answers[2] == ([0.3], [0])
    assert isinstance(answers[1], ValueError) and "got -7.0" in str(answers[1])
    assert scorer.calls == [4, 1, 2, 1]  # the batch, then each request on its own
    assert batcher.stats.retried_alone == 3


async def test_a_caller_that_went_away_is_not_scored() -> None:
    scorer = RecordingScorer()
    batcher = PredictionBatcher(scorer, max_rows=1024)
    gone = batcher.submit([{"x": 1.0}])
    kept = batcher.submit([{"x": 2.0}])
    gone.cancel()
    assert await kept == ([0.2], [0])
    assert scorer.calls == [1]


def _batch_stats(app: FastAPI) -> BatchStats:
    models: ServedModels = app.state.models
    return models.batch_stats()


async def _post_all(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every body posted at once, each on its own connection, as concurrent callers would.

    Encoded by ``json.dumps``, which writes an infinite float as ``Infinity`` as Python's and
    pydantic's JSON parsers accept it (httpx refuses to).
    """
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        posts = (client.post(URL, content=json.dumps(body), headers=headers) for body in bodies)
        return list(await asyncio.gather(*posts))


async def test_concurrent_requests_answer_as_single_ones_in_fewer_model_calls(
    credit: tuple[Path, Path, CreditModel],  # noqa: F811
    registry_dir: Path,  # noqa: F811
) -> None:
    rows = _rows(credit[1], 60)
    bodies = [{"rows": rows[i : i + 1 + i % 3]} for i in range(48)]  # 1 to 3 rows each, overlapping
    expected = await _expected_scores(registry_dir, rows, 1)
    settings = _settings(registry_dir, port=free_port())
    app = build_app(settings)
    async with _uvicorn(settings, app) as url:
        singles = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for body in bodies:  # one at a time: each alone in its batch
                singles.append(await client.post(URL, json=body))
        stats = _batch_stats(app)
        calls_before, requests_before = stats.predictions, stats.requests
        together = await _post_all(url, bodies)
        stats = _batch_stats(app)
    assert all(r.status_code == 200 for r in singles + together), [r.text for r in together][:3]
    for i, (alone, batched) in enumerate(zip(singles, together, strict=True)):
        alone_body, batched_body = alone.json(), batched.json()
        assert batched_body["version"] == alone_body["version"] == 1
        alone_scores = [p["score"] for p in alone_body["predictions"]]
        batched_scores = [p["score"] for p in batched_body["predictions"]]
        assert batched_scores == pytest.approx(alone_scores, abs=1e-12)
        assert batched_scores == pytest.approx(expected[i : i + 1 + i % 3], abs=1e-9)
        assert [p["label"] for p in batched_body["predictions"]] == [
            p["label"] for p in alone_body["predictions"]
        ]
    assert requests_before == len(bodies) and calls_before == len(bodies)
    calls, answered = stats.predictions - calls_before, stats.requests - requests_before
    assert answered == len(bodies)
    assert calls < answered, f"{answered} concurrent requests took {calls} model calls: nothing was batched"
    print(
        f"\n{answered} concurrent requests in {calls} model calls, largest batch {stats.largest_batch_requests}"
    )


async def test_requests_the_model_refuses_fail_alone_among_concurrent_good_ones(
    credit: tuple[Path, Path, CreditModel],  # noqa: F811
    registry_dir: Path,  # noqa: F811
) -> None:
    """Both bad values pass the type check and break only the batch they are in.

    Infinity is a float, and the model's scaler refuses it; 10**30 is an integer that does not fit
    the int32 age column, found when the batch's frame is built.
    """
    rows = _rows(credit[1], 24)
    bodies: list[dict[str, Any]] = [{"rows": [row]} for row in rows]
    bodies[5] = {"rows": [{**rows[5], "income": math.inf}]}
    bodies[9] = {"rows": [rows[9], {**rows[10], "age": 10**30}]}
    expected = await _expected_scores(registry_dir, rows, 1)
    settings = _settings(registry_dir, port=free_port())
    app = build_app(settings)
    async with _uvicorn(settings, app) as url:
        answers = await _post_all(url, bodies)
        stats = _batch_stats(app)
    infinite, too_big = answers[5], answers[9]
    assert infinite.status_code == 422, infinite.text
    assert "could not score these rows" in infinite.json()["detail"]
    assert "infinity" in infinite.json()["detail"].lower()
    assert too_big.status_code == 422, too_big.text
    [problem] = too_big.json()["problems"]
    assert (problem["row"], problem["column"]) == (1, "age")  # its own row number, not the batch's
    assert "does not fit" in problem["problem"] and "int32" in problem["expected"]
    for i, answer in enumerate(answers):
        if i not in {5, 9}:
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"][0]["score"] == pytest.approx(expected[i], abs=1e-9)
    # the refused requests shared a batch with good ones, which was then scored request by request
    assert stats.retried_alone >= 2, f"no batch of several requests failed: {stats}"


async def test_max_batch_rows_of_one_scores_every_request_alone(
    credit: tuple[Path, Path, CreditModel],  # noqa: F811
    registry_dir: Path,  # noqa: F811
) -> None:
    rows = _rows(credit[1], 16)
    settings = _settings(registry_dir, port=free_port(), max_batch_rows=1)
    app = build_app(settings)
    async with _uvicorn(settings, app) as url:
        answers = await _post_all(url, [{"rows": [row]} for row in rows])
        stats = _batch_stats(app)
    assert all(a.status_code == 200 for a in answers)
    assert (stats.requests, stats.predictions, stats.largest_batch_requests) == (16, 16, 1)


async def test_requests_following_a_moving_alias_get_the_scores_of_the_version_they_report(
    credit: tuple[Path, Path, CreditModel],  # noqa: F811
    registry_dir: Path,  # noqa: F811
) -> None:
    raw, store, _ = credit
    rows = _rows(store, 8)
    second = await _commit_refit(raw, store, registry_dir)
    expected = {v: await _expected_scores(registry_dir, rows, v) for v in (1, second)}
    await _move_alias(registry_dir, "champion", 1)
    bodies = [{"rows": [row], "alias": "champion"} for row in rows]
    seen: set[int] = set()
    settings = _settings(registry_dir, port=free_port(), reload_interval_s=0.2)
    async with _uvicorn(settings) as url:
        for round_number in range(200):
            if round_number == 2:
                await _move_alias(registry_dir, "champion", second)
            answers = await _post_all(url, bodies)
            for i, answer in enumerate(answers):
                assert answer.status_code == 200, answer.text
                version = answer.json()["version"]
                seen.add(version)
                assert answer.json()["predictions"][0]["score"] == pytest.approx(
                    expected[version][i], abs=1e-9
                )
            if second in seen and round_number > 2:
                break
            await asyncio.sleep(0.05)
    assert seen == {1, second}, f"the alias move to {second} was not served within 200 rounds: saw {seen}"
