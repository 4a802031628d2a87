"""KubernetesPodLauncher against a fake API server that honours the documented core/v1 pod contract.

No Kubernetes API server can run here, so ``tests.utils.fake_kubernetes`` serves the pod endpoints
the launcher calls, with their documented request and response shapes, and a fake kubelet that
really runs each pod's container command as a local process.

Covered: the launcher's use of the API contract — the created pod is exactly ``build_pod_manifest``'s;
a ``409 AlreadyExists`` is adopted (one container, not two); the pod is watched through
``watch=true&fieldSelector=metadata.name=…`` events to a terminal phase; logs are read with
``tailLines`` and kept in the outcome; ``OOMKilled``, ``DeadlineExceeded``, a signal exit status, a
result's reason, a pod that never schedules and an API refusal (quota) become the same reasons the
process backend gives; the pod is deleted with ``propagationPolicy=Background`` when done, given up
on or cancelled, and kept when cleanup is off; the run files travel through S3 (moto) as in production.

Not covered (they need a real cluster): scheduling and node selection, image pulls, the security
context's enforcement (non-root, read-only root filesystem, dropped capabilities, seccomp), a real
cgroup OOM kill (the fake kubelet kills at the memory limit from RSS), RBAC, network policies,
graceful termination periods, watch bookmarks and ``410 Gone`` resumption, API authentication/TLS.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyarrow import fs

from pfactory.contracts.configs import Resources
from pfactory.trainer import runfiles
from pfactory.trainer.adapters.kubernetes import KubernetesPodLauncher
from pfactory.trainer.jobspec import RunSpec, StoreLocation
from pfactory.trainer.launcher import RunOutcome
from pfactory.trainer.manifest import KubernetesSettings, build_pod_manifest, pod_name
from tests.utils.fake_kubernetes import FakeKubernetes, running_fake_kubernetes

REPO = str(Path(__file__).resolve().parents[3])
NAMESPACE = "pf-runs"
MODEL = "credit_default"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeKubernetes]:
    with running_fake_kubernetes(tmp_path / "kubelet") as fake:
        yield fake


def _settings(fake: FakeKubernetes, **overrides: Any) -> KubernetesSettings:
    values: dict[str, Any] = {
        "namespace": NAMESPACE,
        "image": "registry.example.com/pfactory-trainer:1.0",
        "api_host": fake.url,
        # the test entries stand in for pfactory.trainer.job; the form is the same: python -m … run-job SPEC
        "command": [sys.executable, "-m", "tests.workers.trainer.isolation_entries", "dispatch", "run-job"],
        "env": {"PYTHONPATH": REPO},
        "watch_timeout_seconds": 2,
        "deadline_grace_seconds": 5,
        "pending_timeout_seconds": 30,
        **overrides,
    }
    return KubernetesSettings(**values)


@pytest.fixture
async def launcher(fake: FakeKubernetes) -> AsyncIterator[KubernetesPodLauncher]:
    launcher = KubernetesPodLauncher(_settings(fake))
    yield launcher
    await launcher.aclose()


def _spec(output_uri: str, behaviour: str, **params: Any) -> RunSpec:
    return RunSpec(
        job_id=str(uuid.uuid4()),
        run_id="trial-003",
        config={"kind": "Model"},
        params={"behaviour": behaviour, **params},
        feature_store=StoreLocation(root="/nonexistent/features"),
        output_uri=output_uri,
    )


def _resources(memory: str = "1Gi", timeout_seconds: int = 120) -> Resources:
    return Resources(cpu=1, memory=memory, timeout_seconds=timeout_seconds)


async def _run(
    launcher: KubernetesPodLauncher, spec: RunSpec, resources: Resources | None = None
) -> RunOutcome:
    return await launcher.run(spec, resources=resources or _resources(), model_name=MODEL)


async def test_a_run_is_one_pod_created_watched_logged_and_deleted(
    launcher: KubernetesPodLauncher, fake: FakeKubernetes, tmp_path: Path
) -> None:
    spec = _spec(str(tmp_path / "out"), "probe")
    outcome = await _run(launcher, spec)
    assert outcome.ok and outcome.exit_code == 0 and outcome.reason is None, outcome
    name = pod_name(spec.job_id, spec.run_id)
    expected = build_pod_manifest(
        spec_uri=str(tmp_path / "out" / "spec.json"),
        job_id=spec.job_id,
        run_id=spec.run_id,
        model_name=MODEL,
        resources=_resources(),
        settings=_settings(fake),
    )
    assert fake.created() == [expected]
    assert runfiles.read_spec(str(tmp_path / "out" / "spec.json")) == spec
    assert outcome.result is not None and outcome.result.metrics["omp_env"] == "1"  # the pod's env reached it
    assert "probe trial-003 running" in outcome.logs
    log_reads = [r for r in fake.requests if r.path.endswith("/log")]
    assert [r.query for r in log_reads] == [{"container": "run", "tailLines": "200", "limitBytes": "200000"}]
    watches = [r for r in fake.requests if r.query.get("watch", "").lower() == "true"]
    assert watches and all(r.query["fieldSelector"] == f"metadata.name={name}" for r in watches)
    deletions = fake.deletions()
    assert [(r.path, r.query.get("propagationPolicy")) for r in deletions] == [
        (f"/api/v1/namespaces/{NAMESPACE}/pods/{name}", "Background")
    ]
    assert fake.pod(NAMESPACE, name) is None


async def test_a_failed_run_reports_the_reason_from_its_result(
    launcher: KubernetesPodLauncher, tmp_path: Path
) -> None:
    outcome = await _run(launcher, _spec(str(tmp_path / "out"), "fail_with_reason", reason="no labels"))
    assert not outcome.ok and outcome.exit_code == 1 and outcome.reason == "no labels"
    assert "about to fail" in outcome.logs


async def test_a_crash_reads_as_the_signal_behind_exit_status_139(
    launcher: KubernetesPodLauncher, tmp_path: Path
) -> None:
    outcome = await _run(launcher, _spec(str(tmp_path / "out"), "segfault"))
    assert not outcome.ok and outcome.exit_code == -11
    assert outcome.reason is not None and outcome.reason.startswith("the run crashed with signal SIGSEGV")


async def test_oomkilled_reads_as_the_memory_limit(launcher: KubernetesPodLauncher, tmp_path: Path) -> None:
    outcome = await _run(
        launcher, _spec(str(tmp_path / "out"), "allocate", pause_s=0.01), _resources("300Mi")
    )
    assert not outcome.ok and outcome.exit_code == -9
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        "the run exceeded its memory limit of 300Mi; raise spec.resources.memory"
    )


async def test_deadline_exceeded_reads_as_the_time_limit(
    launcher: KubernetesPodLauncher, fake: FakeKubernetes, tmp_path: Path
) -> None:
    spec = _spec(str(tmp_path / "out"), "sleep_forever")
    outcome = await _run(launcher, spec, _resources(timeout_seconds=1))
    assert not outcome.ok
    assert outcome.reason is not None and outcome.reason.startswith(
        "the run exceeded its time limit of 1 s (spec.resources.timeout_seconds)"
    )
    process = fake.process_of(NAMESPACE, pod_name(spec.job_id, spec.run_id))
    assert process is not None and process.poll() is not None


async def test_a_pod_left_from_an_earlier_delivery_is_adopted_not_duplicated(
    launcher: KubernetesPodLauncher, fake: FakeKubernetes, tmp_path: Path
) -> None:
    spec = _spec(str(tmp_path / "out"), "probe")
    spec_uri = runfiles.write_spec(spec)  # the earlier delivery wrote its spec and created the pod
    manifest = build_pod_manifest(
        spec_uri=spec_uri,
        job_id=spec.job_id,
        run_id=spec.run_id,
        model_name=MODEL,
        resources=_resources(),
        settings=_settings(fake),
    )
    request = urllib.request.Request(
        f"{fake.url}/api/v1/namespaces/{NAMESPACE}/pods",
        data=json.dumps(manifest).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 201
    outcome = await _run(launcher, spec)
    assert outcome.ok, outcome
    assert fake.launches == 1  # one container ran, for both deliveries
    assert len(fake.created()) == 2  # the redelivery's create was answered 409 AlreadyExists


async def test_a_pod_that_never_schedules_fails_with_the_schedulers_message_and_is_deleted(
    fake: FakeKubernetes, tmp_path: Path
) -> None:
    fake.schedulable = False
    launcher = KubernetesPodLauncher(_settings(fake, pending_timeout_seconds=1, delete_finished_pods=False))
    try:
        spec = _spec(str(tmp_path / "out"), "probe")
        outcome = await _run(launcher, spec)
    finally:
        await launcher.aclose()
    assert not outcome.ok and outcome.exit_code is None
    assert outcome.reason == (
        "the run's pod did not start within 1 s (0/3 nodes are available: 3 Insufficient memory.); check "
        "the image and that a node has room for spec.resources"
    )
    assert fake.pod(NAMESPACE, pod_name(spec.job_id, spec.run_id)) is None  # given up on: deleted anyway


async def test_a_refused_pod_is_an_outcome_with_the_apis_message(
    launcher: KubernetesPodLauncher, fake: FakeKubernetes, tmp_path: Path
) -> None:
    message = 'pods "x" is forbidden: exceeded quota: compute, requested: limits.memory=1Gi, limited: 512Mi'
    fake.refuse_creation = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "code": 403,
    }
    outcome = await _run(launcher, _spec(str(tmp_path / "out"), "probe"))
    assert not outcome.ok and outcome.exit_code is None
    assert outcome.reason == (
        f"the Kubernetes API refused the run's pod (403 Forbidden): {message}; check the namespace's "
        "quota and the trainer's Kubernetes settings"
    )


async def test_cancelling_a_run_deletes_its_pod(
    launcher: KubernetesPodLauncher, fake: FakeKubernetes, tmp_path: Path
) -> None:
    spec = _spec(str(tmp_path / "out"), "sleep_forever")
    name = pod_name(spec.job_id, spec.run_id)
    task = asyncio.create_task(_run(launcher, spec))
    deadline = time.monotonic() + 30
    while not (tmp_path / "out" / "pids").exists():
        assert time.monotonic() < deadline, "the pod's container did not start"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.query.get("propagationPolicy") for r in fake.deletions()] == ["Background"]
    assert fake.pod(NAMESPACE, name) is None
    process = fake.process_of(NAMESPACE, name)
    assert process is not None and process.poll() is not None


async def test_finished_pods_are_kept_when_cleanup_is_off(fake: FakeKubernetes, tmp_path: Path) -> None:
    launcher = KubernetesPodLauncher(_settings(fake, delete_finished_pods=False))
    try:
        spec = _spec(str(tmp_path / "out"), "probe")
        outcome = await _run(launcher, spec)
    finally:
        await launcher.aclose()
    assert outcome.ok
    assert fake.deletions() == []
    kept = fake.pod(NAMESPACE, pod_name(spec.job_id, spec.run_id))
    assert kept is not None and kept["status"]["phase"] == "Succeeded"


async def test_the_real_entrypoint_runs_in_the_pod(fake: FakeKubernetes, tmp_path: Path) -> None:
    """The default command, ``python -m pfactory.trainer run-job SPEC``: an invalid config fails with a result."""
    launcher = KubernetesPodLauncher(_settings(fake, command=KubernetesSettings().command))
    try:
        outcome = await _run(launcher, _spec(str(tmp_path / "out"), "probe"))
    finally:
        await launcher.aclose()
    assert fake.created()[0]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "pfactory.trainer",
        "run-job",
    ]
    assert not outcome.ok and outcome.result is not None and not outcome.result.ok, outcome
    assert outcome.reason == outcome.result.reason


@pytest.mark.integration
async def test_run_files_travel_through_s3_as_in_production(
    launcher: KubernetesPodLauncher, fake: FakeKubernetes, moto: str
) -> None:
    s3 = fs.S3FileSystem(
        endpoint_override=moto.removeprefix("http://"),
        scheme="http",
        region="eu-west-1",
        allow_bucket_creation=True,
    )
    s3.create_dir("pf-runs")
    spec = _spec("s3://pf-runs/jobs/j1/trial-003", "probe").model_copy(
        update={
            "feature_store": StoreLocation(
                root="s3://pf-runs/features", endpoint_url=moto, region="eu-west-1"
            )
        }
    )
    outcome = await _run(launcher, spec)
    assert outcome.ok, outcome
    container = fake.created()[0]["spec"]["containers"][0]
    assert container["args"] == ["s3://pf-runs/jobs/j1/trial-003/spec.json"]
    assert {"name": "AWS_ENDPOINT_URL_S3", "value": moto} in container["env"]
    assert s3.get_file_info("pf-runs/jobs/j1/trial-003/result.json").type == fs.FileType.File
