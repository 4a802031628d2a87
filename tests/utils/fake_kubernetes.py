"""A local stand-in for the Kubernetes API, just the pod endpoints the trainer's launcher calls.

It speaks the documented wire shapes of the core/v1 API: ``POST /api/v1/namespaces/{ns}/pods``
(``201`` Pod, ``409`` ``AlreadyExists`` Status), ``GET …/pods?watch=true&fieldSelector=metadata.name=X``
(newline-delimited ``{"type": "ADDED|MODIFIED|DELETED", "object": Pod}`` events in a chunked body,
starting with a synthetic ``ADDED`` and ending after ``timeoutSeconds``), ``GET …/pods/{name}``,
``GET …/pods/{name}/log`` (``tailLines``, ``limitBytes``) and ``DELETE …/pods/{name}``.

A fake kubelet really runs each pod's container: ``command + args`` as a local process with the
container's ``env``, reporting ``Pending`` → ``Running`` → ``Succeeded``/``Failed`` with
``containerStatuses[].state.terminated`` ``{exitCode, reason}``. Like a kubelet it kills a container
whose resident memory passes its memory limit (``OOMKilled``, exit 137) and a pod active longer than
``activeDeadlineSeconds`` (pod reason ``DeadlineExceeded``). With ``schedulable = False`` pods stay
``Pending`` with the scheduler's ``Unschedulable`` condition. Every request is recorded.

It enforces nothing else: no security context, read-only root, RBAC, image pulls or scheduling.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from pfactory.trainer.launcher import parse_memory

_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any = None


@dataclass
class _Pod:
    obj: dict[str, Any]
    log_path: Path
    version: int = 0
    deleted: bool = False
    process: subprocess.Popen[bytes] | None = None
    stop: threading.Event = field(default_factory=threading.Event)


class FakeKubernetes:
    """The fake API server and kubelet; use :func:`running_fake_kubernetes`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.schedulable = True
        self.refuse_creation: dict[str, Any] | None = None  # a Status to answer every POST with
        self.requests: list[Recorded] = []
        self.launches = 0
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._changed = threading.Condition()
        self._version = 0
        self._threads: list[threading.Thread] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- what tests read --------------------------------------------------------------------------
    def created(self) -> list[dict[str, Any]]:
        """The bodies of every pod creation request, in order."""
        return [r.body for r in self.requests if r.method == "POST"]

    def deletions(self) -> list[Recorded]:
        """Every DELETE request, in order."""
        return [r for r in self.requests if r.method == "DELETE"]

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The live pod's object as the API would return it (None when absent or deleted)."""
        with self._changed:
            pod = self._pods.get((namespace, name))
            return None if pod is None or pod.deleted else json.loads(json.dumps(pod.obj))

    def process_of(self, namespace: str, name: str) -> subprocess.Popen[bytes] | None:
        """The container process the kubelet started for a pod (live or deleted)."""
        pod = self._pods.get((namespace, name))
        return pod.process if pod else None

    # -- API ---------------------------------------------------------------------------------------
    def create(self, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body.get("metadata", {}).get("name")
        if not name:
            return 422, _status(422, "Invalid", "Pod is invalid: metadata.name: Required value")
        if body["metadata"].get("namespace", namespace) != namespace:
            return 400, _status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if self.refuse_creation is not None:
            return int(self.refuse_creation["code"]), self.refuse_creation
        with self._changed:
            existing = self._pods.get((namespace, name))
            if existing and not existing.deleted:
                return 409, {
                    **_status(409, "AlreadyExists", f'pods "{name}" already exists'),
                    "details": {"name": name, "kind": "pods"},
                }
            obj = json.loads(json.dumps(body))
            obj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
            obj["status"] = {"phase": "Pending", "qosClass": "Guaranteed"}
            pod = self._pods[(namespace, name)] = _Pod(obj, self.workdir / f"{namespace}.{name}.log")
            self._touch(pod)
        thread = threading.Thread(target=self._kubelet, args=(pod,), daemon=True)
        self._threads.append(thread)
        thread.start()
        return 201, obj

    def delete(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._changed:
            pod = self._pods.get((namespace, name))
            if pod is None or pod.deleted:
                return 404, _status(404, "NotFound", f'pods "{name}" not found')
            pod.deleted = True
            pod.obj["metadata"]["deletionTimestamp"] = _now()
            self._touch(pod)
        pod.stop.set()
        self._kill(pod)
        return 200, pod.obj

    def log(self, namespace: str, name: str, query: dict[str, str]) -> tuple[int, Any]:
        pod = self._pods.get((namespace, name))
        if pod is None or pod.deleted:
            return 404, _status(404, "NotFound", f'pods "{name}" not found')
        if pod.process is None:
            return 400, _status(
                400, "BadRequest", f'container "run" in pod "{name}" is waiting to start: ContainerCreating'
            )
        text = pod.log_path.read_bytes() if pod.log_path.exists() else b""
        if "tailLines" in query:
            text = b"".join(text.splitlines(keepends=True)[-int(query["tailLines"]) :])
        if "limitBytes" in query:
            text = text[: int(query["limitBytes"])]
        return 200, text.decode("utf-8", errors="replace")

    def watch_events(self, namespace: str, name: str | None, timeout: float) -> Iterator[dict[str, Any]]:
        """Events for the watch: the current state first (ADDED), then every change, until ``timeout``."""
        seen: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                events = []
                for (ns, pod_name), pod in self._pods.items():
                    if ns != namespace or (name and pod_name != name) or seen.get(pod_name) == pod.version:
                        continue
                    if pod.deleted and pod_name not in seen:
                        continue
                    kind = "DELETED" if pod.deleted else "MODIFIED" if pod_name in seen else "ADDED"
                    seen[pod_name] = pod.version
                    events.append({"type": kind, "object": json.loads(json.dumps(pod.obj))})
                if not events:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(remaining)
            yield from events

    # -- kubelet -------------------------------------------------------------------------------------
    def _touch(self, pod: _Pod) -> None:
        """Record a change (caller holds the lock)."""
        self._version += 1
        pod.version = self._version
        pod.obj["metadata"]["resourceVersion"] = str(self._version)
        self._changed.notify_all()

    def _update(self, pod: _Pod, **status: Any) -> None:
        with self._changed:
            if not pod.deleted:
                pod.obj["status"].update(status)
                self._touch(pod)

    def _kill(self, pod: _Pod) -> None:
        if pod.process and pod.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGKILL)
            pod.process.wait()

    def _kubelet(self, pod: _Pod) -> None:
        spec = pod.obj["spec"]
        container = spec["containers"][0]
        if not self.schedulable:
            self._update(
                pod,
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient memory.",
                    }
                ],
            )
            return
        self._update(
            pod,
            conditions=[{"type": "PodScheduled", "status": "True"}],
            containerStatuses=[
                {
                    "name": "run",
                    "ready": False,
                    "restartCount": 0,
                    "image": container["image"],
                    "imageID": "",
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
            ],
        )
        command = [*container.get("command", []), *container.get("args", [])]
        if command and command[0] == "python":  # the image's python is this interpreter here
            command[0] = sys.executable
        env = {**os.environ, **{item["name"]: item["value"] for item in container.get("env", [])}}
        cwd = self.workdir / pod.obj["metadata"]["name"]
        cwd.mkdir(parents=True, exist_ok=True)
        with open(pod.log_path, "wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
            )
        pod.process = process
        self.launches += 1
        started = _now()
        self._update(
            pod,
            phase="Running",
            startTime=started,
            containerStatuses=[
                {
                    "name": "run",
                    "ready": True,
                    "restartCount": 0,
                    "image": container["image"],
                    "imageID": "",
                    "state": {"running": {"startedAt": started}},
                }
            ],
        )
        limit = container.get("resources", {}).get("limits", {}).get("memory")
        limit_bytes = parse_memory(limit) if limit else None
        deadline = spec.get("activeDeadlineSeconds")
        began = time.monotonic()
        ended_by = None
        while process.poll() is None and not pod.stop.wait(0.05):
            if limit_bytes and _rss(process.pid) > limit_bytes:
                ended_by = "OOMKilled"
            elif deadline and time.monotonic() - began > deadline:
                ended_by = "DeadlineExceeded"
            if ended_by:
                self._kill(pod)
        if pod.stop.is_set():
            return
        code = process.wait()
        exit_code = 128 - code if code < 0 else code  # the runtime reports 128 + signal
        reason = "OOMKilled" if ended_by == "OOMKilled" else "Completed" if exit_code == 0 else "Error"
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": _now()}
        status: dict[str, Any] = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "run",
                    "ready": False,
                    "restartCount": 0,
                    "image": container["image"],
                    "imageID": "",
                    "state": {"terminated": terminated},
                }
            ],
        }
        if ended_by == "DeadlineExceeded":
            status.update(
                reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            )
        self._update(pod, **status)

    def stop(self) -> None:
        """Stop serving and kill every container still running."""
        self._server.shutdown()
        self._server.server_close()
        for pod in list(self._pods.values()):
            pod.stop.set()
            self._kill(pod)
        for thread in self._threads:
            thread.join(10)


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError):
        return 0


def _handler(fake: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the client keeps connections alive; watches are chunked

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, payload: Any) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.requests.append(Recorded(method, url.path, query, body))
            match = _PODS.match(url.path)
            if match is None:
                return self._send(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            namespace, name, log = match.groups()
            if method == "POST" and name is None:
                return self._send(*fake.create(namespace, body or {}))
            if method == "DELETE" and name and not log:
                return self._send(*fake.delete(namespace, name))
            if method == "GET" and name and log:
                return self._send(*fake.log(namespace, name, query))
            if method == "GET" and name:
                pod = fake.pod(namespace, name)
                return (
                    self._send(200, pod)
                    if pod
                    else self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
                )
            if method == "GET" and query.get("watch") in ("true", "1", "True"):
                return self._watch(namespace, query)
            return self._send(405, _status(405, "MethodNotAllowed", f"{method} {url.path} is not served"))

        def _watch(self, namespace: str, query: dict[str, str]) -> None:
            selector = query.get("fieldSelector", "")
            name = selector.removeprefix("metadata.name=") if selector.startswith("metadata.name=") else None
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in fake.watch_events(namespace, name, float(query.get("timeoutSeconds", 1800))):
                line = (json.dumps(event) + "\n").encode()
                try:
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                    self.wfile.flush()
                except OSError:  # the client went away
                    return
            self.wfile.write(b"0\r\n\r\n")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


@contextmanager
def running_fake_kubernetes(workdir: Path) -> Iterator[FakeKubernetes]:
    """A fake API server on a free loopback port for the duration of the block."""
    fake = FakeKubernetes(workdir)
    thread = threading.Thread(target=fake._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stop()
        thread.join(10)
