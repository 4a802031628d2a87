"""The embedded stack: a Tansu broker, the gateway and the five workers as child processes.

``pfactory up`` and ``pfactory demo`` run it, and so do the integration tests::

    with Stack(home=tmp_path / ".pfactory", prefer_default_ports=False) as stack:
        httpx.post(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {stack.api_key}"}, ...)

Every child runs in its own session (process group), so stopping it also stops anything it
spawned; on Linux each child also gets SIGTERM if this process dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pfactory.bus.broker import ensure_topics
from pfactory.bus.embedded import EmbeddedBroker, free_port
from pfactory.bus.settings import BusSettings
from pfactory.cli.credentials import Credentials, load_or_create_credentials

DEFAULT_HOME = Path(".pfactory")
DEFAULT_BROKER_PORT = 9092
STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """The stack could not start (a port, the broker, or a service that never became healthy)."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the stack.

    Args:
        name: short name, also the log file's stem.
        module: run as ``python -m <module>``.
        default_port: the port ``pfactory up`` prefers for its HTTP endpoints.
        port_env: the environment variable that sets that port.
        extra_env: further environment for this service; values are formatted with the stack's
            fields (``{home}``, ``{api_key}``, ``{port}``, ``{gateway_url}``).
        args: arguments after ``python -m <module>`` (a module serving more than one role).
        fetch_max_wait_ms: how long the service's consumers wait on a fetch. Tansu answers a waiting
            fetch only when this runs out, so it is the most a hop into the service costs, and each
            consumer polls this often when idle: short for the hops a user waits on (a submitted job
            reaching the trainer, a trained model reaching the registrar), long for daily work.
            ``PF_BUS_FETCH_MAX_WAIT_MS`` in the environment or the stack's ``extra_env`` wins.
    """

    name: str
    module: str
    default_port: int
    port_env: str
    extra_env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    fetch_max_wait_ms: int = 100


GATEWAY = ServiceSpec(
    "gateway",
    "pfactory.gateway",
    8080,
    "PF_GATEWAY_PORT",
    {
        "PF_GATEWAY_HOST": "127.0.0.1",
        "PF_GATEWAY_DATA_DIR": "{home}",
        "PF_GATEWAY_BOOTSTRAP_ADMIN_KEY": "{api_key}",
        "PF_GATEWAY_PUBLIC_BASE_URL": "http://127.0.0.1:{port}",
        "PF_REGISTRY_DATA_DIR": "{home}/registry",
        "PF_GATEWAY_FEATURE_STORE_ROOT": "{home}",
    },
)
WORKERS: tuple[ServiceSpec, ...] = (
    # partitions live under the stack's home; the gateway reads their stats and reports from there
    ServiceSpec(
        "materialiser",
        "pfactory.materialiser",
        8102,
        "PF_MATERIALISER_HEALTH_PORT",
        {"PF_MATERIALISER_STORE_ROOT": "{home}", "PF_MATERIALISER_GATEWAY_URL": "{gateway_url}"},
        fetch_max_wait_ms=250,
    ),
    ServiceSpec(
        "trainer",
        "pfactory.trainer",
        8101,
        "PF_TRAINER_HEALTH_PORT",
        {
            "PF_REGISTRY_DATA_DIR": "{home}/registry",
            "PF_TRAINER_FEATURE_STORE_ROOT": "{home}",
            "PF_TRAINER_SCRATCH_DIR": "{home}/trainer",
        },
        fetch_max_wait_ms=20,
    ),
    # the registrar writes the registry the gateway reads: one folder and SQLite file for both
    ServiceSpec(
        "registrar",
        "pfactory.registrar",
        8103,
        "PF_REGISTRAR_HEALTH_PORT",
        {"PF_REGISTRY_DATA_DIR": "{home}/registry"},
        fetch_max_wait_ms=20,
    ),
    # the scheduler approves, takes live and archives versions in the registry; without Airflow it runs
    # the schedules itself (PF_SCHEDULER_DAGS_FOLDER set: it writes DAG files there instead)
    ServiceSpec(
        "scheduler",
        "pfactory.scheduler",
        8104,
        "PF_SCHEDULER_HEALTH_PORT",
        {
            "PF_REGISTRY_DATA_DIR": "{home}/registry",
            "PF_SCHEDULER_STATE_DIR": "{home}/scheduler",
        },
        fetch_max_wait_ms=250,
    ),
    # the scorer reads the registry and the partitions, and writes predictions/ under the home
    ServiceSpec(
        "scorer",
        "pfactory.scorer",
        8105,
        "PF_SCORER_HEALTH_PORT",
        {
            "PF_REGISTRY_DATA_DIR": "{home}/registry",
            "PF_SCORER_STORE_ROOT": "{home}",
            "PF_SCORER_GATEWAY_URL": "{gateway_url}",
        },
        fetch_max_wait_ms=250,
    ),
    # online predictions for registered versions; loopback only, so no key checking
    ServiceSpec(
        "online",
        "pfactory.scorer",
        8106,
        "PF_ONLINE_PORT",
        {"PF_REGISTRY_DATA_DIR": "{home}/registry", "PF_ONLINE_HOST": "127.0.0.1", "PF_ONLINE_AUTH": "none"},
        args=("online",),
    ),
    # the alert router keeps its open incidents under the home. PagerDuty and Datadog are used only when
    # PF_ALERTER_PAGERDUTY_ROUTING_KEY / PF_ALERTER_DATADOG_API_KEY are in the environment; without a key
    # it logs 'would page' and still keeps incident state, so the stack runs offline
    ServiceSpec(
        "alerter",
        "pfactory.alerter",
        8107,
        "PF_ALERTER_HEALTH_PORT",
        {
            "PF_ALERTER_STATE_DIR": "{home}/alerter",
            "PF_ALERTER_INCIDENTS_API": "true",
            "PF_ALERTER_GATEWAY_URL": "{gateway_url}",
        },
        fetch_max_wait_ms=250,
    ),
)
SERVICES: tuple[ServiceSpec, ...] = (*WORKERS, GATEWAY)


@dataclass
class RunningService:
    """A started child process."""

    spec: ServiceSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    reported_exit: bool = False

    @property
    def name(self) -> str:
        """The service's short name."""
        return self.spec.name

    @property
    def url(self) -> str:
        """Base URL of its HTTP endpoints."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id)."""
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        """None while running, else the exit code (negative: killed by that signal)."""
        return self.process.poll()


@dataclass(frozen=True)
class ServiceExit:
    """A child that stopped while the stack was running."""

    name: str
    exit_code: int
    log_path: Path
    log_tail: str


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _choose_port(preferred: int | None, prefer_default: bool, default: int, taken: set[int]) -> int:
    if preferred is not None:
        if not port_is_free(preferred):
            raise StackError(f"port {preferred} is already in use on 127.0.0.1; choose another one")
        return preferred
    if prefer_default and default not in taken and port_is_free(default):
        return default
    while True:
        port = free_port()
        if port not in taken:
            return port


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """GET ``url``; return its status code, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the stack's process dies (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _run_ensure_topics(settings: BusSettings) -> None:
    """Create the platform topics with their partition counts before any service subscribes."""
    asyncio.run(ensure_topics(settings))


class Stack:
    """The embedded Prediction Factory: broker, gateway and workers, with logs under ``home``.

    Args:
        home: state folder (``.pfactory``): ``credentials.json``, ``stack.json``, ``logs/``, data.
        broker_port: Tansu's port; default 9092 when free (and ``prefer_default_ports``), else any.
        gateway_port: the gateway's port; default 8080 when free, else any.
        prefer_default_ports: try the well-known ports first; tests pass False to avoid clashes.
        services: which services to run (names from :data:`SERVICES`); all by default.
        health_timeout_s: how long each service may take to answer ``/health``.
        extra_env: environment added to every child (e.g. ``PF_BUS_SESSION_TIMEOUT_MS``).
        python: the interpreter that runs the children.
    """

    def __init__(
        self,
        home: Path = DEFAULT_HOME,
        *,
        broker_port: int | None = None,
        gateway_port: int | None = None,
        prefer_default_ports: bool = True,
        services: Sequence[str] | None = None,
        health_timeout_s: float = 120.0,
        extra_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.home = home.resolve()
        self.logs_dir = self.home / "logs"
        self.state_path = self.home / STATE_FILE
        known = {spec.name: spec for spec in SERVICES}
        unknown = sorted(set(services or ()) - set(known))
        if unknown:
            raise StackError(f"unknown service(s) {unknown}; known: {sorted(known)}")
        self.specs = [spec for spec in SERVICES if services is None or spec.name in services]
        self._broker_port = broker_port
        self._gateway_port = gateway_port
        self._prefer_default = prefer_default_ports
        self.health_timeout_s = health_timeout_s
        self._extra_env = dict(extra_env or {})
        self._service_env: dict[str, dict[str, str]] = {}  # per service, from restart()
        self._python = python
        self.broker: EmbeddedBroker | None = None
        self.credentials: Credentials | None = None
        self._gateway_url = f"http://127.0.0.1:{GATEWAY.default_port}"
        self.services: list[RunningService] = []

    # ------------------------------------------------------------------ properties

    @property
    def bootstrap_servers(self) -> str:
        """The broker's ``host:port`` (only once started)."""
        if self.broker is None:
            raise StackError("the stack is not started")
        return self.broker.bootstrap_servers

    @property
    def api_key(self) -> str:
        """The admin key the gateway was given."""
        if self.credentials is None:
            raise StackError("the stack is not started")
        return self.credentials.api_key

    @property
    def gateway(self) -> RunningService:
        """The running gateway."""
        for service in self.services:
            if service.name == GATEWAY.name:
                return service
        raise StackError("the gateway is not running in this stack")

    @property
    def gateway_url(self) -> str:
        """The gateway's base URL."""
        return self.gateway.url

    @property
    def pids(self) -> dict[str, int]:
        """Child process ids by service name."""
        return {service.name: service.pid for service in self.services}

    # ------------------------------------------------------------------ lifecycle

    def start(self, on_progress: Callable[[str], None] | None = None) -> Stack:
        """Start the broker, create the topics, start every service and wait for each ``/health``.

        Args:
            on_progress: called with a short line at each step (the CLI prints them).

        Returns:
            self, started.

        Raises:
            StackError: a port is taken, another stack runs from ``home``, or a service died or
                never answered ``/health``; everything started so far is stopped again.
        """
        say = on_progress or (lambda _line: None)
        self._refuse_if_running()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.credentials = load_or_create_credentials(self.home)
        taken: set[int] = set()
        try:
            broker_port = _choose_port(self._broker_port, self._prefer_default, DEFAULT_BROKER_PORT, taken)
            taken.add(broker_port)
            self.broker = EmbeddedBroker(port=broker_port, log_path=self.logs_dir / "broker.log")
            say(f"starting the Tansu broker on {self.broker.bootstrap_servers}")
            self.broker.start()
            say("creating the platform topics")
            _run_ensure_topics(BusSettings(bootstrap_servers=self.broker.bootstrap_servers))
            ports: dict[str, int] = {}
            for spec in self.specs:  # every port first: a service may need another's (the gateway URL)
                preferred = self._gateway_port if spec is GATEWAY else None
                ports[spec.name] = _choose_port(preferred, self._prefer_default, spec.default_port, taken)
                taken.add(ports[spec.name])
            self._gateway_url = f"http://127.0.0.1:{ports.get(GATEWAY.name, GATEWAY.default_port)}"
            for spec in self.specs:
                self.services.append(self._spawn(spec, ports[spec.name]))
            say("waiting for " + ", ".join(s.name for s in self.services) + " to answer /health")
            self._wait_healthy()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> dict[str, int | None]:
        """Stop every child (SIGTERM to its process group, wait, then SIGKILL), then the broker.

        The gateway stops first so nothing new is accepted while the workers drain.

        Returns:
            Each service's exit code (None if it could not be reaped).
        """
        codes: dict[str, int | None] = {}
        ordered = sorted(self.services, key=lambda s: s.name != GATEWAY.name)
        for service in ordered:
            if service.process.poll() is None:
                self._signal(service, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for service in ordered:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                service.process.wait(remaining)
            except subprocess.TimeoutExpired:
                self._signal(service, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    service.process.wait(5)
            # Anything the child spawned in its group goes too.
            self._signal(service, signal.SIGKILL)
            codes[service.name] = service.process.poll()
        self.services = []
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        return codes

    def restart(
        self, name: str, env: Mapping[str, str] | None = None, timeout_s: float = 10.0
    ) -> RunningService:
        """Stop one service and start it again on its port, with ``env`` added to its environment.

        The demo moves the scheduler's clock this way (``PF_SCHEDULER_CLOCK_OFFSET_S``). The new
        environment stays for later restarts of that service.

        Raises:
            StackError: the service is not running in this stack, or the new process did not answer
                ``/health`` (the rest of the stack keeps running).
        """
        running = next((service for service in self.services if service.name == name), None)
        if running is None:
            raise StackError(f"{name!r} is not running in this stack; running: {sorted(self.pids)}")
        if running.process.poll() is None:
            self._signal(running, signal.SIGTERM)
            try:
                running.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(running, signal.SIGKILL)
                running.process.wait(5)
        self._service_env.setdefault(name, {}).update(env or {})
        started = self._spawn(running.spec, running.port)
        self.services[self.services.index(running)] = started
        self._wait_healthy([started])
        self._write_state()
        return started

    def exited(self) -> list[ServiceExit]:
        """Children that stopped since the last call (each is reported once)."""
        gone: list[ServiceExit] = []
        for service in self.services:
            code = service.exit_code
            if code is not None and not service.reported_exit:
                service.reported_exit = True
                gone.append(ServiceExit(service.name, code, service.log_path, tail(service.log_path)))
        return gone

    def all_exited(self) -> bool:
        """True when no child is running any more."""
        return all(service.exit_code is not None for service in self.services)

    def readiness(self) -> dict[str, bool]:
        """Each service's ``/ready`` answer right now (gateway and workers)."""
        return {s.name: http_status(f"{s.url}/ready") == 200 for s in self.services}

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _child_env(self, spec: ServiceSpec, port: int) -> dict[str, str]:
        assert self.broker is not None and self.credentials is not None
        fields = {
            "home": str(self.home),
            "api_key": self.credentials.api_key,
            "port": str(port),
            "gateway_url": self._gateway_url,
        }
        # Tansu answers a waiting fetch only when it times out: see ServiceSpec.fetch_max_wait_ms
        env = {
            "PF_BUS_FETCH_MAX_WAIT_MS": str(spec.fetch_max_wait_ms),
            "SPARK_LOCAL_IP": "127.0.0.1",  # Spark binds loopback like every other server of the stack
            **os.environ,
            **self._extra_env,
        }
        env.update(
            {
                "PF_BUS_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                spec.port_env: str(port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({key: value.format(**fields) for key, value in spec.extra_env.items()})
        env.update(self._service_env.get(spec.name, {}))
        return env

    def _spawn(self, spec: ServiceSpec, port: int) -> RunningService:
        log_path = self.logs_dir / f"{spec.name}.log"
        with open(log_path, "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"---- {spec.name} starting at {stamp} on port {port} ----\n".encode())
            log.flush()
            process = subprocess.Popen(
                [self._python, "-m", spec.module, *spec.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._child_env(spec, port),
                cwd=self.home.parent,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        return RunningService(spec=spec, port=port, process=process, log_path=log_path)

    def _wait_healthy(self, services: Sequence[RunningService] | None = None) -> None:
        deadline = time.monotonic() + self.health_timeout_s
        waiting = list(self.services if services is None else services)
        while waiting:
            for service in list(waiting):
                code = service.process.poll()
                if code is not None:
                    service.reported_exit = True
                    raise StackError(
                        f"{service.name} exited with code {code} while starting; "
                        f"last lines of {service.log_path}:\n{tail(service.log_path)}"
                    )
                if http_status(f"{service.url}/health", timeout_s=0.5) == 200:
                    waiting.remove(service)
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{s.name} ({s.log_path})" for s in waiting)
                raise StackError(f"no /health answer within {self.health_timeout_s:.0f} s from: {names}")
            time.sleep(0.1)

    @staticmethod
    def _signal(service: RunningService, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.pid, signum)

    def _write_state(self) -> None:
        assert self.broker is not None and self.credentials is not None
        state = {
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "bootstrap_servers": self.broker.bootstrap_servers,
            "gateway_url": self.gateway_url if any(s.name == GATEWAY.name for s in self.services) else None,
            "credentials_file": str(self.credentials.path),
            "services": {
                s.name: {"pid": s.pid, "port": s.port, "log": str(s.log_path)} for s in self.services
            },
        }
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")

    def _refuse_if_running(self) -> None:
        state = read_stack_state(self.home)
        if state is None:
            return
        pid = state.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
            raise StackError(
                f"a stack is already running from {self.home} "
                f"(pid {pid}, gateway {state.get('gateway_url')}); "
                "stop it with Ctrl-C in its terminal, or use another folder with --home"
            )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_stack_state(home: Path) -> dict[str, object] | None:
    """The ``stack.json`` of a running stack under ``home`` (None when absent or unreadable)."""
    try:
        data = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
