"""Fixtures for the scheduler's tests: a real Airflow 3.3 (own venv, sqlite) and a stand-in gateway."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.workers.scheduler.airflow_env import AirflowEnv

API_KEY = "pf_0123456789ab_" + "s" * 43


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """Airflow 3.3.2 in its own venv (built once, reused across sessions), migrated once per session."""
    return AirflowEnv.create(tmp_path_factory.mktemp("airflow-home"))


@dataclass
class Recorded:
    """One request the stand-in gateway received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class GatewayScript:
    """How the stand-in gateway answers: the first ``partition_misses`` partition looks are 404s, and
    runs and jobs report ``running`` for ``polls_before_done`` looks before ``outcome``."""

    partition_misses: int = 1
    polls_before_done: int = 1
    outcome: str = "succeeded"
    reason: str = "the model's signature does not match the partition (column 'income' missing)"


@dataclass
class FakeGateway:
    """The few endpoints a generated DAG calls, on 127.0.0.1, recording every request."""

    url: str
    script: GatewayScript
    requests: list[Recorded] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        """The recorded requests with ``method`` whose path matches ``pattern`` (a regex)."""
        with self.lock:
            return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    def answer(self, request: Recorded) -> tuple[int, dict[str, Any]]:
        """The stand-in's answer (called under ``lock``)."""
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return 401, {"detail": "missing or unknown API key", "code": "unauthenticated"}
        path, method = request.path, request.method
        if method == "GET" and re.fullmatch(r"/v1/feature-sets/[^/]+/versions/[^/]+/partitions/[^/]+", path):
            looks = len([r for r in self.requests if r.path == path])
            if looks < self.script.partition_misses:
                return 404, {"detail": "no such day", "code": "partition_not_found"}
            return 200, {"status": "good", "ds": path.rsplit("/", 1)[1], "rows": 10}
        if method == "POST" and path == "/v1/scoring-runs":
            key = request.headers.get("idempotency-key", "")
            if key in self.keys:
                run = self.runs[self.keys[key]]
                return 200, {"run_id": run["run_id"], "status": run["status"], "replayed": True}
            return 202, self._new_run(request.body or {}, key)
        if method == "POST" and re.fullmatch(r"/v1/feature-sets/[^/]+/versions/[^/]+/materialisations", path):
            key = request.headers.get("idempotency-key", "")
            if key in self.keys:
                job = self.runs[self.keys[key]]
                return 200, {
                    "job_id": job["run_id"],
                    "kind": "materialise",
                    "status": job["status"],
                    "replayed": True,
                }
            run = self._new_run(request.body or {}, key)
            return 202, {"job_id": run["run_id"], "kind": "materialise", "status": "accepted"}
        if method == "GET" and (found := re.fullmatch(r"/v1/(?:scoring-runs|jobs)/([^/]+)", path)):
            polled = self.runs.get(found[1])
            if polled is None:
                return 404, {"detail": f"no run {found[1]}", "code": "run_not_found"}
            polled["looks"] += 1
            if polled["looks"] > self.script.polls_before_done:
                polled["status"] = self.script.outcome
                polled["reason"] = self.script.reason if self.script.outcome == "failed" else None
            return 200, {k: v for k, v in polled.items() if k != "looks"}
        if method == "POST" and path == "/v1/alerts":
            return 202, {"alert_id": f"alert-{len(self.requests)}", "status": "open"}
        return 404, {"detail": f"the stand-in gateway has no {method} {path}", "code": "not_found"}

    def _new_run(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = {"run_id": run_id, "status": "accepted", "looks": 0, "asked": body}
        if key:
            self.keys[key] = run_id
        return {"run_id": run_id, "status": "accepted", "replayed": False}


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    """A stand-in gateway on a free loopback port, stopped after the test."""
    holder: dict[str, FakeGateway] = {}

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            fake = holder["gateway"]
            recorded = Recorded(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw) if raw else None,
            )
            with fake.lock:
                status, document = fake.answer(recorded)
                fake.requests.append(recorded)
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["gateway"] = FakeGateway(url=f"http://127.0.0.1:{server.server_port}", script=GatewayScript())
    thread = threading.Thread(target=server.serve_forever, name="fake-gateway", daemon=True)
    thread.start()
    try:
        yield holder["gateway"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def dag_folder(tmp_path: Path) -> Path:
    """An empty DAG folder for one test."""
    folder = tmp_path / "dags"
    folder.mkdir()
    return folder
