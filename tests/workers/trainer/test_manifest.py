"""The run pod's manifest: a pure function of the run, its resources and the Kubernetes settings."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_asyncio.client import ApiClient
from pydantic import ValidationError

from pfactory.contracts.configs import Resources
from pfactory.trainer.manifest import (
    KubernetesSettings,
    build_pod_manifest,
    cpu_quantity,
    label_value,
    memory_quantity,
    pod_name,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SPEC_URI = "s3://pf-artifacts/runs/job-1/trial-003/spec.json"


def _manifest(resources: Resources | None = None, **settings: Any) -> dict[str, Any]:
    return build_pod_manifest(
        spec_uri=SPEC_URI,
        job_id="0b6f7d2e-9a51-4c1e-8d3f-2f1c9e8a7b64",
        run_id="trial-003",
        model_name="credit_default",
        resources=resources or Resources(cpu=1.5, memory="3Gi", timeout_seconds=900),
        settings=KubernetesSettings(**settings),
    )


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _env(manifest: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in _container(manifest)["env"]}


def test_the_pod_runs_the_entrypoint_once_with_the_spec_uri_and_a_deadline() -> None:
    manifest = _manifest()
    assert manifest["apiVersion"] == "v1" and manifest["kind"] == "Pod"
    assert manifest["metadata"]["namespace"] == "pfactory"
    container = _container(manifest)
    assert container["command"] == ["python", "-m", "pfactory.trainer", "run-job"]
    assert container["args"] == [SPEC_URI]
    assert container["image"] == "pfactory-trainer:latest"
    assert container["imagePullPolicy"] == "IfNotPresent"
    spec = manifest["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 900
    assert spec["serviceAccountName"] == "pfactory-trainer-runner"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False


def test_requests_equal_limits_for_guaranteed_qos() -> None:
    resources = _container(_manifest())["resources"]
    assert resources == {
        "requests": {"cpu": "1500m", "memory": "3Gi"},
        "limits": {"cpu": "1500m", "memory": "3Gi"},
    }


def test_gpus_are_a_limit_of_the_nvidia_resource_only_when_asked_for() -> None:
    with_gpus = _container(_manifest(Resources(cpu=4, memory="16Gi", gpu=2)))["resources"]
    assert with_gpus["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert with_gpus["requests"] == {
        "cpu": "4",
        "memory": "16Gi",
    }  # an extended resource's request defaults to it
    assert "nvidia.com/gpu" not in _container(_manifest())["resources"]["limits"]


@pytest.mark.parametrize(
    ("cores", "quantity"),
    [(1.0, "1"), (2, "2"), (1.5, "1500m"), (0.25, "250m"), (0.1, "100m"), (0.0001, "1m"), (2.0005, "2001m")],
)
def test_cpu_is_written_as_a_kubernetes_quantity(cores: float, quantity: str) -> None:
    assert cpu_quantity(cores) == quantity


@pytest.mark.parametrize(
    ("memory", "quantity"),
    [("4Gi", "4Gi"), ("300Mi", "300Mi"), ("1.5G", "1.5G"), ("512K", "512k"), ("1000", "1000")],
)
def test_memory_is_written_as_kubernetes_spells_it(memory: str, quantity: str) -> None:
    assert memory_quantity(memory) == quantity


def test_the_container_is_locked_down() -> None:
    manifest = _manifest()
    assert _container(manifest)["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod_security = manifest["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == 10001
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_scratch_is_a_size_limited_empty_dir_at_tmp_and_home_points_there() -> None:
    manifest = _manifest(scratch_size="5Gi")
    assert manifest["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "5Gi"}}]
    assert _container(manifest)["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]
    env = _env(manifest)
    assert env["TMPDIR"] == "/tmp" and env["HOME"] == "/tmp"  # the root filesystem is read-only


def test_thread_pools_match_the_cpu_and_settings_env_comes_last() -> None:
    env = _env(_manifest(env={"AWS_REGION": "eu-west-1", "OMP_NUM_THREADS": "1"}))
    assert env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"  # ceil(1.5)
    assert env["OMP_NUM_THREADS"] == "1"  # an operator's explicit choice wins
    assert env["AWS_REGION"] == "eu-west-1"
    assert "AWS_ENDPOINT_URL_S3" not in env


def test_a_storage_endpoint_reaches_the_run_as_the_standard_aws_variable() -> None:
    manifest = build_pod_manifest(
        spec_uri=SPEC_URI,
        job_id="j",
        run_id="r",
        model_name="m",
        resources=Resources(),
        settings=KubernetesSettings(),
        storage_endpoint_url="http://minio.storage:9000",
    )
    assert _env(manifest)["AWS_ENDPOINT_URL_S3"] == "http://minio.storage:9000"


def test_optional_scheduling_and_secrets_appear_only_when_set() -> None:
    bare = _manifest()
    for key in ("nodeSelector", "tolerations", "imagePullSecrets"):
        assert key not in bare["spec"]
    assert "envFrom" not in _container(bare)
    toleration = {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"}
    full = _manifest(
        node_selector={"pool": "training"},
        tolerations=[toleration],
        image_pull_secrets=["registry-creds"],
        env_from_secret="pfactory-aws",
    )
    assert full["spec"]["nodeSelector"] == {"pool": "training"}
    assert full["spec"]["tolerations"] == [toleration]
    assert full["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert _container(full)["envFrom"] == [{"secretRef": {"name": "pfactory-aws"}}]


def test_labels_find_the_pod_and_annotations_keep_the_ids_whole() -> None:
    long_model = "credit default model for the retail lending portfolio, 2024 revision (EU)"
    manifest = build_pod_manifest(
        spec_uri=SPEC_URI,
        job_id="job-1",
        run_id="trial-003",
        model_name=long_model,
        resources=Resources(),
        settings=KubernetesSettings(labels={"team": "risk"}, annotations={"a": "b"}),
    )
    labels = manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "pfactory-trainer-run"
    assert labels["pfactory.io/job-id"] == "job-1" and labels["pfactory.io/run-id"] == "trial-003"
    assert labels["team"] == "risk"
    assert LABEL_VALUE.match(labels["pfactory.io/model"]) and len(labels["pfactory.io/model"]) <= 63
    annotations = manifest["metadata"]["annotations"]
    assert annotations["pfactory.io/model"] == long_model
    assert annotations["pfactory.io/spec-uri"] == SPEC_URI and annotations["a"] == "b"


def test_the_builder_is_pure() -> None:
    settings = KubernetesSettings(env={"A": "1"}, tolerations=[{"key": "k", "operator": "Exists"}])
    arguments: dict[str, Any] = {
        "spec_uri": SPEC_URI,
        "job_id": "j",
        "run_id": "r",
        "model_name": "m",
        "resources": Resources(),
        "settings": settings,
    }
    first = build_pod_manifest(**arguments)
    first["spec"]["tolerations"][0]["key"] = "changed"
    first["spec"]["containers"][0]["command"].append("--oops")
    assert build_pod_manifest(**arguments) != first
    assert settings.tolerations == [{"key": "k", "operator": "Exists"}]
    assert settings.command == ["python", "-m", "pfactory.trainer", "run-job"]


@given(job_id=st.text(max_size=200), run_id=st.text(max_size=80))
def test_pod_names_are_dns_labels_stable_per_job_and_run(job_id: str, run_id: str) -> None:
    name = pod_name(job_id, run_id)
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert name.startswith("pf-train-")
    assert pod_name(job_id, run_id) == name


@given(
    st.tuples(st.text(max_size=80), st.text(max_size=20)),
    st.tuples(st.text(max_size=80), st.text(max_size=20)),
)
def test_different_runs_get_different_pod_names(one: tuple[str, str], other: tuple[str, str]) -> None:
    if one != other:
        assert pod_name(*one) != pod_name(*other)


def test_similar_ids_that_sanitise_alike_still_get_different_names() -> None:
    assert pod_name("Job_A", "trial-1") != pod_name("job-a", "trial-1")
    assert pod_name("x" * 100 + "1", "r") != pod_name("x" * 100 + "2", "r")


@given(st.text(max_size=300))
def test_label_values_are_always_valid(value: str) -> None:
    label = label_value(value)
    assert len(label) <= 63 and LABEL_VALUE.match(label), label


@given(st.from_regex(LABEL_VALUE, fullmatch=True).filter(lambda v: len(v) <= 63))
def test_valid_label_values_are_kept_as_they_are(value: str) -> None:
    assert label_value(value) == value


@given(st.text(max_size=100), st.text(max_size=100))
def test_distinct_values_stay_distinct_labels(one: str, other: str) -> None:
    if one != other:
        assert label_value(one) != label_value(other)


async def test_the_manifest_is_a_valid_v1_pod_for_the_kubernetes_client_models() -> None:
    """Round trip through kubernetes_asyncio's V1Pod: an unknown or misplaced key would be dropped."""
    manifest = _manifest(
        Resources(cpu=2, memory="8Gi", gpu=1, timeout_seconds=60),
        node_selector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        image_pull_secrets=["registry-creds"],
        env_from_secret="pfactory-aws",
    )
    async with ApiClient() as api:
        pod = api.deserialize(SimpleNamespace(data=json.dumps(manifest)), "V1Pod")
        assert type(pod).__name__ == "V1Pod"
        assert api.sanitize_for_serialization(pod) == manifest


def test_settings_come_from_the_environment_and_refuse_unknown_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PF_TRAINER_K8S_NAMESPACE", "ml-training")
    monkeypatch.setenv("PF_TRAINER_K8S_ENV", '{"AWS_REGION": "eu-west-1"}')
    settings = KubernetesSettings()
    assert settings.namespace == "ml-training" and settings.env == {"AWS_REGION": "eu-west-1"}
    with pytest.raises(ValidationError, match="extra"):
        KubernetesSettings(namspace="typo")  # type: ignore[call-arg]
    assert all(field.description for field in KubernetesSettings.model_fields.values())
