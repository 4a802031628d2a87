"""Gateway test helpers: sample configs, an in-memory sink, a client on a running app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from pfactory.contracts.events import Envelope

FEATURE_SET_YAML = """\
apiVersion: pfactory.io/v1
kind: FeatureSet
metadata:
  name: credit-features
  owner: risk-ds@bank.example
spec:
  entity: applicant_id
  timestamp: application_ts
  version: 3
  sources:
    applicants:
      format: parquet
      path: data/applicants/
  models:
    - name: features
      sql: "select applicant_id, application_ts, income from {{ source('applicants') }}"
  features:
    - name: income
      dtype: float
"""

MODEL_YAML = """\
apiVersion: pfactory.io/v1
kind: Model
metadata:
  name: credit-default
  owner: risk-ds@bank.example
spec:
  feature_set:
    name: credit-features
    version: 3
  labels:
    path: data/labels/
    entity: applicant_id
    date_column: label_date
    label_column: defaulted
  task: binary_classification
  training:
    window:
      start: 2024-01-01
      end: 2024-06-30
  pipeline:
    estimator:
      import: sklearn.linear_model.LogisticRegression
  metrics:
    primary: roc_auc
  card:
    intended_use: credit decisions
    contact: risk-ds@bank.example
"""

YAML = {"Content-Type": "application/yaml"}


@dataclass
class RecordingSink:
    """An envelope sink that keeps what it was given; ``down`` makes every publish fail."""

    published: list[tuple[Envelope, str, str | None]] = field(default_factory=list)
    down: bool = False
    attempts: int = 0

    async def publish(self, envelope: Envelope, topic: str, key: str | None) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionError("broker unreachable (test)")
        self.published.append((envelope, topic, key))

    async def close(self) -> None:
        return None

    def for_job(self, job_id: str) -> list[Envelope]:
        """Envelopes published for one job."""
        return [envelope for envelope, _, _ in self.published if envelope.correlation_id == job_id]


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, timeout: float = 10.0, what: str
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def serving(app: FastAPI, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app with its lifespan running; ``key`` is sent as a bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers
        ) as client:
            yield client


class QueueStatusFeed:
    """A status feed fed by the test; ``handled`` counts envelopes the app has applied."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue()
        self.handled = 0

    async def run(self, handle: Callable[[Envelope], Awaitable[object]]) -> None:
        while True:
            envelope = await self.queue.get()
            await handle(envelope)
            self.handled += 1

    async def deliver(self, *envelopes: Envelope) -> None:
        """Hand envelopes to the app and wait until it applied them."""
        target = self.handled + len(envelopes)
        for envelope in envelopes:
            self.queue.put_nowait(envelope)
        await eventually(lambda: self.handled >= target, what="status envelopes to be applied")
