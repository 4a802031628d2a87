"""The pod that runs one training run: a pure function from the run and the settings to a manifest.

The pod runs the trainer image's entrypoint (``python -m pfactory.trainer run-job SPEC_URI``) with the
model config's resources as both requests and limits (Guaranteed QoS: the run gets what it asked for
and is the first thing killed when it takes more), as a non-root user on a read-only root
filesystem with every capability dropped, no service-account token, and a size-limited ``emptyDir``
at ``/tmp`` as its only writable place. Labels carry the model, job and run ids so operators can
find a job's pods; annotations keep the ids unshortened.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.contracts.configs import Resources
from pfactory.trainer.launcher import parse_memory

APP_NAME = "pfactory-trainer-run"
RUN_USER = 10001
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class KubernetesSettings(BaseSettings):
    """Where and how training pods run (env prefix ``PF_TRAINER_K8S_``)."""

    model_config = SettingsConfigDict(env_prefix="PF_TRAINER_K8S_", extra="forbid")

    namespace: str = Field(default="pfactory", description="Namespace the run pods are created in.")
    image: str = Field(
        default="pfactory-trainer:latest",
        description="Image with the trainer installed (the worker's own image: it has the run-job entrypoint).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets holding registry credentials for a private image."
    )
    service_account: str = Field(
        default="pfactory-trainer-runner",
        description="Service account of run pods: a dedicated one, bound to nothing in the cluster API.",
    )
    command: list[str] = Field(
        default_factory=lambda: ["python", "-m", "pfactory.trainer", "run-job"],
        description="The container's command; the spec URI is its only argument.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the run container (e.g. AWS_REGION)."
    )
    env_from_secret: str | None = Field(
        default=None, description="A Secret whose keys become environment variables (e.g. AWS credentials)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a run pod must match."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations of run pods, as the Kubernetes API spells them."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on every run pod.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations on every run pod."
    )
    scratch_size: str = Field(
        default="2Gi",
        pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description="Size limit of the /tmp emptyDir.",
    )
    delete_finished_pods: bool = Field(
        default=True,
        description="Delete a run's pod once its outcome is read (False keeps finished pods for debugging; "
        "a cancelled run's pod is always deleted).",
    )
    pending_timeout_seconds: int = Field(
        default=600,
        gt=0,
        description="How long a pod may wait to be scheduled and pulled before the run fails.",
    )
    watch_timeout_seconds: int = Field(
        default=60, gt=0, description="Server-side timeout of one watch request; the launcher re-watches."
    )
    deadline_grace_seconds: int = Field(
        default=60, ge=0, description="How long past the run's own deadline the launcher waits for the pod."
    )
    api_host: str | None = Field(
        default=None,
        description="Kubernetes API URL (tests point it at a local fake); None: in-cluster config, else kubeconfig.",
    )
    verify_ssl: bool = Field(default=True, description="Check the API server's TLS certificate.")


def cpu_quantity(cores: float) -> str:
    """CPU cores as a Kubernetes quantity: ``2``, ``1500m``, ``250m``."""
    millicores = math.ceil(round(cores * 1000, 6))
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def memory_quantity(memory: str) -> str:
    """A memory size as Kubernetes spells it (``4Gi``, ``1.5G``); bytes when it has no exact spelling."""
    number, suffix = re.match(r"^([\d.]+)(\D*)$", memory.strip()).groups()  # type: ignore[union-attr]
    if suffix == "K":  # the config accepts K for kilo; Kubernetes only knows the lower-case k
        suffix = "k"
    parse_memory(memory)  # refuses what is not a quantity
    return f"{number}{suffix}"


def label_value(value: str) -> str:
    """``value`` as a valid label value: at most 63 of ``[A-Za-z0-9_.-]``, alphanumeric at both ends.

    A value that had to change gets a short hash of the original, so distinct ids stay distinct.
    """
    if _LABEL_VALUE.match(value) and len(value) <= 63:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:54].strip("-_.")
    return f"{cleaned}-{digest}" if cleaned else digest


def pod_name(job_id: str, run_id: str) -> str:
    """``pf-train-<job>-<run>-<hash>``: a DNS-1123 label (≤ 63), the same for the same (job, run)."""
    digest = hashlib.sha256(f"{job_id}\x00{run_id}".encode()).hexdigest()[:10]

    def part(text: str, width: int) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:width].strip("-")

    parts = ["pf-train", part(job_id, 24), part(run_id, 16), digest]
    return "-".join(piece for piece in parts if piece)


def build_pod_manifest(
    *,
    spec_uri: str,
    job_id: str,
    run_id: str,
    model_name: str,
    resources: Resources,
    settings: KubernetesSettings,
    storage_endpoint_url: str | None = None,
) -> dict[str, Any]:
    """The ``v1/Pod`` that runs one training run.

    Args:
        spec_uri: where the run's ``spec.json`` is; the container's only argument.
        job_id: the training job; labelled and part of the pod's name.
        run_id: the run within the job (``trial-003``, ``ensemble``).
        model_name: the model being trained; labelled.
        resources: the model config's ``spec.resources``.
        settings: namespace, image, service account and the rest.
        storage_endpoint_url: S3 endpoint of the run files, when not AWS (set as ``AWS_ENDPOINT_URL_S3``).

    Returns:
        The manifest as the Kubernetes API takes it (camelCase keys).
    """
    threads = str(max(1, math.ceil(resources.cpu)))
    quantities: dict[str, str] = {
        "cpu": cpu_quantity(resources.cpu),
        "memory": memory_quantity(resources.memory),
    }
    limits = dict(quantities)
    if resources.gpu:
        limits["nvidia.com/gpu"] = str(resources.gpu)
    env = {
        "HOME": "/tmp",  # the root filesystem is read-only: anything that writes home writes scratch
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), threads),
        **({"AWS_ENDPOINT_URL_S3": storage_endpoint_url} if storage_endpoint_url else {}),
        **settings.env,
    }
    container: dict[str, Any] = {
        "name": "run",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(settings.command),
        "args": [spec_uri],
        "env": [{"name": name, "value": value} for name, value in env.items()],
        "resources": {"requests": quantities, "limits": limits},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_USER,
            "runAsGroup": RUN_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.env_from_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.env_from_secret}}]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": resources.timeout_seconds,
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_USER,
            "runAsGroup": RUN_USER,
            "fsGroup": RUN_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": memory_quantity(settings.scratch_size)}}],
    }
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [dict(toleration) for toleration in settings.tolerations]
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    labels = {
        **settings.labels,
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/managed-by": "pfactory-trainer",
        "pfactory.io/model": label_value(model_name),
        "pfactory.io/job-id": label_value(job_id),
        "pfactory.io/run-id": label_value(run_id),
    }
    annotations = {
        **settings.annotations,
        "pfactory.io/model": model_name,
        "pfactory.io/job-id": job_id,
        "pfactory.io/run-id": run_id,
        "pfactory.io/spec-uri": spec_uri,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(job_id, run_id),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }
