"""A real Apache Airflow 3.3 for tests and benches, in its own virtualenv.

Airflow's pins conflict with the workspace's, so it lives in a venv of its own under
``~/.cache/pfactory/airflow-3.3.2-py311`` (override with ``PF_AIRFLOW_VENV``), built once with uv and
reused: a marker file is written last, so a venv left half-built by an interrupted install is rebuilt.
Commands run with a clean environment: the workspace's packages are not importable there, which also
proves a generated DAG needs nothing from ``pfactory``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

AIRFLOW_VERSION = "3.3.2"
REQUIREMENTS = (
    f"apache-airflow=={AIRFLOW_VERSION}",
    "apache-airflow-task-sdk==1.3.2",
    "apache-airflow-providers-standard==1.21.0",
    # the scoring DAG's pod variant (PF_SCHEDULER_DAG_RUNNER=kubernetes) runs KubernetesPodOperator
    "apache-airflow-providers-cncf-kubernetes==10.25.0",
)
PYTHON = "3.11"
DEFAULT_VENV = Path.home() / ".cache" / "pfactory" / f"airflow-{AIRFLOW_VERSION}-py311"
MARKER = ".pfactory-complete"
INSTALL_TIMEOUT_S = 900

# Environment variables that would leak the workspace (or another venv) into Airflow's interpreter.
_LEAKY = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "UV_PROJECT_ENVIRONMENT")


def _say(message: str) -> None:
    print(f"[airflow-env] {message}", file=sys.stderr, flush=True)


def uv_command() -> list[str]:
    """How to run uv: the one on PATH, else ``python -m uv`` (as the Makefile does)."""
    found = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if found:
        return [found]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [sys.executable, "-m", "uv"]
    raise RuntimeError(
        "uv is needed to build the Airflow test venv but was found neither on PATH nor as "
        f"'{sys.executable} -m uv'; install it (pip install uv) or run the tests through 'make test'"
    )


def _marker_text() -> str:
    return json.dumps({"requirements": list(REQUIREMENTS), "python": PYTHON})


def _run_step(command: Sequence[str], what: str, env: Mapping[str, str]) -> None:
    started = time.monotonic()
    done = subprocess.run(
        list(command), capture_output=True, text=True, env=dict(env), timeout=INSTALL_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {done.returncode}): {' '.join(command)}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
    _say(f"{what}: {time.monotonic() - started:.1f} s")


def ensure_airflow_venv(venv: Path | None = None) -> Path:
    """Build (or reuse) the Airflow venv and return its directory.

    Args:
        venv: where the venv lives; default ``PF_AIRFLOW_VENV`` or ``~/.cache/pfactory/airflow-3.3.2-py311``.

    Returns:
        The venv's directory, holding ``bin/python`` and ``bin/airflow``.
    """
    venv = venv or Path(os.environ.get("PF_AIRFLOW_VENV") or DEFAULT_VENV)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions (tests and a bench) must not build it together
        marker = venv / MARKER
        if marker.is_file() and marker.read_text() == _marker_text() and (venv / "bin" / "airflow").exists():
            return venv
        if venv.exists():
            _say(f"rebuilding {venv} (incomplete or built for other versions)")
            shutil.rmtree(venv)
        _say(f"building the Airflow {AIRFLOW_VERSION} venv at {venv} (once; about 10-40 s)")
        env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
        uv = uv_command()
        _run_step([*uv, "venv", "--quiet", "--python", PYTHON, str(venv)], "uv venv", env)
        _run_step(
            [*uv, "pip", "install", "--compile-bytecode", *REQUIREMENTS],
            "uv pip install",
            {**env, "VIRTUAL_ENV": str(venv)},
        )
        _run_step(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import airflow.sdk, airflow.providers.standard, airflow.providers.cncf.kubernetes.operators.pod",
            ],
            "import check",
            env,
        )
        marker.write_text(_marker_text())
    return venv


@dataclass(frozen=True)
class AirflowEnv:
    """An Airflow installation (the venv) with one ``AIRFLOW_HOME`` (sqlite metadata database)."""

    venv: Path
    home: Path
    dags_folder: Path

    @classmethod
    def create(cls, home: Path, *, venv: Path | None = None, migrate: bool = True) -> AirflowEnv:
        """Build or reuse the venv, lay out ``home`` and (by default) run ``airflow db migrate`` there."""
        env = cls(venv=ensure_airflow_venv(venv), home=home, dags_folder=home / "dags")
        env.dags_folder.mkdir(parents=True, exist_ok=True)
        if migrate:
            started = time.monotonic()
            env.airflow("db", "migrate", timeout=300).check("airflow db migrate")
            _say(f"airflow db migrate: {time.monotonic() - started:.1f} s")
        return env

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.venv / "bin" / "python"

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment Airflow commands run with (no workspace packages; ``extra`` overrides)."""
        env = {k: v for k, v in os.environ.items() if k not in _LEAKY and not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        env.update(extra or {})
        return env

    def airflow(
        self, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None
    ) -> AirflowResult:
        """Run the ``airflow`` command line with a timeout."""
        return self._run([str(self.venv / "bin" / "airflow"), *args], timeout, env)

    def run_python(
        self, script: str, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None
    ) -> AirflowResult:
        """Run ``script`` (source text) with the venv's interpreter."""
        return self._run([str(self.python), "-c", script, *args], timeout, env)

    def load_dags(
        self,
        folder: Path,
        *,
        first_runs: int = 0,
        pods_at: datetime | None = None,
        serialize: bool = False,
        timeout: float = 300,
    ) -> DagBagReport:
        """Parse every DAG file in ``folder`` with one ``DagBag`` in the venv and describe what loaded.

        Deprecation warnings are turned into errors while the files import (so they show up as import
        errors), and every other warning Airflow captured is reported too.

        Args:
            folder: the DAG files.
            first_runs: also ask each DAG's timetable for its first ``first_runs`` runs from start_date.
            pods_at: also build the pod of every KubernetesPodOperator task as a run with this logical
                date would (templates rendered, then ``build_pod_request_obj``; no API server is called)
                and describe it as the Kubernetes API would receive it (task key ``pod``).
            serialize: also round-trip each DAG through Airflow's serialization, as the DAG processor
                stores it for the scheduler (DAG key ``serialized``: true, or the error).
            timeout: seconds the parse may take.
        """
        result = self.run_python(
            DAGBAG_SCRIPT,
            str(folder),
            str(first_runs),
            pods_at.isoformat() if pods_at else "",
            "serialize" if serialize else "",
            timeout=timeout,
        )
        result.check("loading the DAG folder with a DagBag")
        document = result.json_tail()
        assert isinstance(document, dict)
        return DagBagReport(
            dags=document["dags"],
            import_errors=document["import_errors"],
            warnings=document["warnings"],
            parse_seconds=document["parse_seconds"],
            process_seconds=result.seconds,
        )

    def _run(self, command: list[str], timeout: float, env: Mapping[str, str] | None) -> AirflowResult:
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=self.environment(env),
                cwd=self.home,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(
                f"{' '.join(command[:4])} did not finish within {timeout} s; output so far:\n"
                f"{_text(error.stdout)[-3000:]}\n{_text(error.stderr)[-3000:]}"
            ) from error
        return AirflowResult(command, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


@dataclass(frozen=True)
class AirflowResult:
    """What an Airflow command did."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def check(self, what: str) -> AirflowResult:
        """Raise with the command's output unless it exited 0."""
        if self.returncode != 0:
            raise AssertionError(
                f"{what} failed (exit {self.returncode}): {' '.join(self.command[:6])}\n"
                f"stdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}"
            )
        return self

    def json_tail(self) -> object:
        """The JSON document on the last line of stdout (scripts print their answer last)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(
                f"no output from {' '.join(self.command[:4])}; stderr:\n{self.stderr[-3000:]}"
            )
        return json.loads(lines[-1])


@dataclass(frozen=True)
class DagBagReport:
    """What ``DagBag`` made of a folder: per DAG id a description (see ``DAGBAG_SCRIPT``)."""

    dags: dict[str, dict[str, object]]
    import_errors: dict[str, str]
    warnings: dict[str, list[str]]
    parse_seconds: float
    process_seconds: float


# Runs inside the Airflow venv: argv = folder, number of first runs to compute, logical date of the pods
# to build ("" for none), "serialize" or "". Prints one JSON line.
DAGBAG_SCRIPT = r"""
import json, sys, time, warnings
from datetime import timedelta
from types import SimpleNamespace

folder, first_runs, pods_at, serialize = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "serialize"
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.timetables.base import TimeRestriction

def seconds(value):
    return value.total_seconds() if isinstance(value, timedelta) else value

def pod_of(dag, task):
    # what the task runner does before execute (render the template fields), then what execute builds;
    # a templated "{{ ds }}" would render to JINJA-RENDERED, which no day looks like
    import pendulum
    from kubernetes.client import ApiClient
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task.task_id, run_id="manual__" + pods_at, map_index=-1, try_number=1)
    context = {"logical_date": pendulum.parse(pods_at), "ti": ti, "run_id": ti.run_id, "dag": dag, "ds": "JINJA-RENDERED"}
    task.render_template_fields(context)
    pod = task.build_pod_request_obj(context, dry_run=True)
    return {"template_fields": list(task.template_fields), "spec": ApiClient().sanitize_for_serialization(pod)}

def round_trip(dag):
    from airflow.serialization.serialized_objects import DagSerialization
    try:
        DagSerialization.from_dict(DagSerialization.to_dict(dag))
        return True
    except Exception as error:
        return type(error).__name__ + ": " + str(error)

started = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("always")
    warnings.simplefilter("error", DeprecationWarning)
    warnings.simplefilter("error", PendingDeprecationWarning)
    bag = DagBag(folder, safe_mode=False, load_op_links=False)
parse_seconds = time.perf_counter() - started

dags = {}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for task in dag.tasks:
        tasks[task.task_id] = {
            "type": type(task).__name__,
            "module": type(task).__module__,
            "mode": getattr(task, "mode", None),
            "poke_interval": seconds(getattr(task, "poke_interval", None)),
            "timeout": seconds(getattr(task, "timeout", None)),
            "owner": task.owner,
            "retries": task.retries,
            "retry_delay": seconds(task.retry_delay),
            "execution_timeout": seconds(task.execution_timeout),
            "on_failure_callback": [getattr(c, "__name__", repr(c)) for c in (
                task.on_failure_callback if isinstance(task.on_failure_callback, list)
                else [task.on_failure_callback] if task.on_failure_callback else [])],
            "downstream": sorted(task.downstream_task_ids),
        }
        if pods_at and hasattr(task, "build_pod_request_obj"):
            tasks[task.task_id]["pod"] = pod_of(dag, task)
    timetable = dag.timetable
    runs = []
    if first_runs:
        core = coerce_to_core_timetable(timetable)
        restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
        last = None
        for _ in range(first_runs):
            info = core.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
            if info is None:
                break
            runs.append({"logical_date": info.logical_date.isoformat(), "run_after": info.run_after.isoformat()})
            last = info.data_interval
    # the first run the scheduler would create, with the DAG's own restriction (catchup as set)
    own = TimeRestriction(earliest=dag.start_date, latest=dag.end_date, catchup=dag.catchup)
    scheduled = coerce_to_core_timetable(timetable).next_dagrun_info(
        last_automated_data_interval=None, restriction=own
    )
    dags[dag_id] = {
        "fileloc": dag.fileloc,
        "tags": sorted(dag.tags),
        "timetable": type(timetable).__name__,
        "timetable_module": type(timetable).__module__,
        "cron": getattr(timetable, "expression", None),
        "timezone": str(getattr(timetable, "timezone", None)),
        "start_date": dag.start_date.isoformat(),
        "start_date_tz": str(dag.start_date.tzinfo),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        "doc_md": dag.doc_md,
        "default_owner": (dag.default_args or {}).get("owner"),
        "tasks": tasks,
        "first_runs": runs,
        "next_run": scheduled.logical_date.isoformat() if scheduled else None,
    }
    if serialize:
        dags[dag_id]["serialized"] = round_trip(dag)
print(json.dumps({
    "dags": dags,
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "warnings": {str(k): list(v) for k, v in bag.captured_warnings.items()},
    "parse_seconds": parse_seconds,
}))
"""
