"""deploy/k8s: both overlays render, validate offline, and agree with the code they deploy.

Each check lives in :mod:`tests.deploy.k8s_checks` and is run twice: on the real rendering (no
problems) and on a copy broken the way a careless edit would break it (the problem is reported).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from pfactory.contracts.configs import Resources
from pfactory.contracts.topics import ALL_TOPICS
from pfactory.trainer.manifest import build_pod_manifest
from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj

# KafkaTopic replicas and min.insync.replicas per overlay (None: the broker default)
TOPIC_SETTINGS: dict[str, tuple[int, int | None]] = {"dev": (1, None), "prod": (3, 2)}


def overlay(name: str) -> list[Obj]:
    """A fresh copy of the rendered overlay."""
    return checks.render(checks.K8S_DIR / "overlays" / name)


def built_run_pod(objects: list[Obj], *, cpu: float = 1.5, gpu: int = 0) -> Obj:
    """The pod the trainer would start for one run, with the settings the manifests give it."""
    return build_pod_manifest(
        spec_uri="s3://pfactory-store/runs/job-1/trial-001/spec.json",
        job_id="job-1",
        run_id="trial-001",
        model_name="churn",
        resources=Resources(cpu=cpu, memory="3Gi", timeout_seconds=1800, gpu=gpu),
        settings=checks.trainer_k8s_settings(objects),
    )


def deployment(objects: list[Obj], service: str) -> Obj:
    return checks.one(objects, "Deployment", f"pfactory-{service}")


def container(objects: list[Obj], service: str) -> Obj:
    containers: list[Obj] = deployment(objects, service)["spec"]["template"]["spec"]["containers"]
    return containers[0]


def set_env(objects: list[Obj], service: str, name: str, value: str) -> None:
    env = container(objects, service)["env"]
    for item in env:
        if item["name"] == name:
            item.clear()
            item.update({"name": name, "value": value})
            return
    env.append({"name": name, "value": value})


# ---- the real manifests ----------------------------------------------------------------------


@pytest.mark.parametrize("name", checks.OVERLAYS)
def test_overlay_renders_and_every_check_passes(name: str) -> None:
    objects = overlay(name)
    assert {obj["kind"] for obj in objects} >= {"Deployment", "NetworkPolicy", "KafkaTopic", "PodTemplate"}
    problems = {check: run(objects) for check, run in checks.CHECKS.items()}
    assert problems == {check: [] for check in checks.CHECKS}


def test_kubernetes_validate_has_no_schema_for_custom_kinds() -> None:
    # why the CRDs need their own schemas: kubernetes-validate raises SchemaNotFoundError (its CLI only warns)
    topic = next(obj for obj in overlay("dev") if obj["kind"] == "KafkaTopic")
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(topic, checks.KUBERNETES_VERSION, strict=True)


def test_base_images_name_their_dockerfiles() -> None:
    assert checks.port_problems(checks.render(checks.K8S_DIR / "base"), base_images=True) == []


@pytest.mark.parametrize("name", checks.OVERLAYS)
def test_topics_equal_the_contracts(name: str) -> None:
    objects = overlay(name)
    replicas, min_insync = TOPIC_SETTINGS[name]
    assert checks.topic_problems(objects, replicas=replicas, min_insync=min_insync) == []
    assert len(checks.find(objects, "KafkaTopic")) == len(ALL_TOPICS)


@pytest.mark.parametrize("name", checks.OVERLAYS)
def test_pod_template_equals_the_trainers_pod_builder(name: str) -> None:
    objects = overlay(name)
    pod = built_run_pod(objects)
    assert checks.pod_template_problems(objects, pod) == []
    # the per-run fields really are the only difference, and the image is the trainer's own
    assert pod["spec"]["containers"][0]["image"] == container(objects, "trainer")["image"]
    assert pod["metadata"]["namespace"] == deployment(objects, "trainer")["metadata"]["namespace"]
    for run_cpu in (0.25, 4.0):
        assert checks.pod_template_problems(objects, built_run_pod(objects, cpu=run_cpu, gpu=1)) == []


def test_prod_pins_release_images_everywhere_the_trainer_image_is_used() -> None:
    objects = overlay("prod")
    images = {container(objects, name)["image"] for name in checks.SERVICES}
    assert all(image.endswith(":0.1.0") and "/pfactory/" in image for image in images)
    template = checks.one(objects, "PodTemplate", checks.TRAINER_RUN)["template"]
    env = {item["name"]: item.get("value") for item in container(objects, "trainer")["env"]}
    assert template["spec"]["containers"][0]["image"] == container(objects, "trainer")["image"]
    assert env["PF_TRAINER_K8S_IMAGE"] == container(objects, "trainer")["image"]


@pytest.mark.parametrize("name", checks.OVERLAYS)
def test_aws_access_is_by_irsa_role_per_service_account(name: str) -> None:
    objects = overlay(name)
    role_arn = "eks.amazonaws.com/role-arn"
    annotated = {
        sa["metadata"]["name"]: sa["metadata"].get("annotations", {}).get(role_arn)
        for sa in checks.find(objects, "ServiceAccount")
    }
    aws_users = {s.deployment for s in checks.SERVICES.values() if s.name != "alerter"} | {
        "pfactory-trainer-runner"
    }
    assert {sa for sa, arn in annotated.items() if arn} == aws_users
    assert all(annotated[sa].endswith(f":role/{sa}") for sa in aws_users)


@pytest.mark.parametrize("name", checks.OVERLAYS)
def test_trainer_role_is_exactly_what_the_launcher_calls(name: str) -> None:
    needed = checks.launcher_permissions(checks.LAUNCHER.read_text(encoding="utf-8"))
    assert needed == {
        ("pods", "create"),
        ("pods", "get"),
        ("pods", "list"),
        ("pods", "watch"),
        ("pods", "delete"),
        ("pods/log", "get"),
    }
    assert checks.rbac_problems(overlay(name), needed) == []


def test_keda_in_prod_hpa_in_dev() -> None:
    dev, prod = overlay("dev"), overlay("prod")
    assert checks.find(dev, "ScaledObject") == []
    kafka_workers = {"pfactory-materialiser", "pfactory-trainer", "pfactory-registrar", "pfactory-scorer"}
    assert {o["spec"]["scaleTargetRef"]["name"] for o in checks.find(prod, "ScaledObject")} == kafka_workers
    dev_hpas = {o["spec"]["scaleTargetRef"]["name"] for o in checks.find(dev, "HorizontalPodAutoscaler")}
    assert dev_hpas == kafka_workers | {"pfactory-scorer-online"}


# ---- each check catches the mistake it is for ------------------------------------------------


def _misspell_setting(objects: list[Obj]) -> None:
    set_env(objects, "scorer", "PF_SCORER_STORE_ROTO", "s3://x")


def _misspell_configmap_key(objects: list[Obj]) -> None:
    checks.one(objects, "ConfigMap", "pfactory-config")["data"]["PF_BUS_BOOTSTRAP_SERVER"] = "kafka:9092"


def _invalid_value(objects: list[Obj]) -> None:
    set_env(objects, "trainer", "PF_TRAINER_BACKEND", "slurm")


def _registry_env_on_alerter(objects: list[Obj]) -> None:
    container(objects, "alerter")["envFrom"].append({"configMapRef": {"name": "pfactory-registry"}})


def _loopback_bind(objects: list[Obj]) -> None:
    set_env(objects, "registrar", "PF_REGISTRAR_HEALTH_HOST", "127.0.0.1")


def _unknown_secret(objects: list[Obj]) -> None:
    container(objects, "gateway")["env"].append(
        {"name": "PF_GATEWAY_LOG_LEVEL", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}
    )


def _wrong_port(objects: list[Obj]) -> None:
    container(objects, "materialiser")["ports"][0]["containerPort"] = 8101


def _port_override_without_container_port(objects: list[Obj]) -> None:
    set_env(objects, "alerter", "PF_ALERTER_HEALTH_PORT", "9000")


def _readiness_on_health(objects: list[Obj]) -> None:
    container(objects, "scorer")["readinessProbe"]["httpGet"]["path"] = "/health"


def _wrong_image(objects: list[Obj]) -> None:
    container(objects, "registrar")["image"] = "pfactory-registry:dev"


def _online_without_args(objects: list[Obj]) -> None:
    del container(objects, "scorer-online")["args"]


def _root_user(objects: list[Obj]) -> None:
    deployment(objects, "gateway")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0


def _writable_root(objects: list[Obj]) -> None:
    container(objects, "trainer")["securityContext"]["readOnlyRootFilesystem"] = False


def _no_limits(objects: list[Obj]) -> None:
    del container(objects, "materialiser")["resources"]["limits"]


def _stateful_rolling(objects: list[Obj]) -> None:
    deployment(objects, "alerter")["spec"]["strategy"] = {"type": "RollingUpdate"}


def _stateful_scaled(objects: list[Obj]) -> None:
    deployment(objects, "scheduler")["spec"]["replicas"] = 2


def _template_drift(objects: list[Obj]) -> None:
    template = checks.one(objects, "PodTemplate", checks.TRAINER_RUN)["template"]
    template["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] = "8Gi"


def _settings_drift(objects: list[Obj]) -> None:
    set_env(objects, "trainer", "PF_TRAINER_K8S_SERVICE_ACCOUNT", "default")


def _image_drift(objects: list[Obj]) -> None:
    container(objects, "trainer")["image"] = "pfactory-trainer:other"


def _extra_verb(objects: list[Obj]) -> None:
    checks.one(objects, "Role", "pfactory-trainer")["rules"][0]["verbs"].append("patch")


def _missing_log_access(objects: list[Obj]) -> None:
    checks.one(objects, "Role", "pfactory-trainer")["rules"].pop()


def _cluster_role(objects: list[Obj]) -> None:
    role = copy.deepcopy(checks.one(objects, "Role", "pfactory-trainer"))
    role["kind"] = "ClusterRole"
    objects.append(role)


def _runner_bound(objects: list[Obj]) -> None:
    binding = checks.one(objects, "RoleBinding", "pfactory-trainer")
    binding["subjects"].append(
        {"kind": "ServiceAccount", "name": "pfactory-trainer-runner", "namespace": "pfactory"}
    )


def _missing_topic(objects: list[Obj]) -> None:
    objects.remove(next(o for o in objects if o["kind"] == "KafkaTopic"))


def _wrong_partitions(objects: list[Obj]) -> None:
    topic = next(
        o for o in objects if o["kind"] == "KafkaTopic" and o["spec"]["topicName"] == "pf.train.requested"
    )
    topic["spec"]["partitions"] = 12


def _wrong_retention(objects: list[Obj]) -> None:
    topic = next(o for o in objects if o["kind"] == "KafkaTopic" and o["spec"]["topicName"] == "pf.alerts")
    topic["spec"]["config"]["retention.ms"] = 1000


def _extra_topic(objects: list[Obj]) -> None:
    topic = copy.deepcopy(next(o for o in objects if o["kind"] == "KafkaTopic"))
    topic["metadata"]["name"] = topic["spec"]["topicName"] = "pf.unknown"
    objects.append(topic)


def _no_default_deny(objects: list[Obj]) -> None:
    objects.remove(checks.one(objects, "NetworkPolicy", "pfactory-default-deny"))


def _all_egress(objects: list[Obj]) -> None:
    checks.one(objects, "NetworkPolicy", "pfactory-services-egress")["spec"]["egress"].append({})


def _unselected_deployment(objects: list[Obj]) -> None:
    labels = deployment(objects, "registrar")["spec"]["template"]["metadata"]["labels"]
    labels["app.kubernetes.io/name"] = "pfactory-registrar-v2"


def _no_kafka_egress(objects: list[Obj]) -> None:
    objects.remove(checks.one(objects, "NetworkPolicy", "pfactory-kafka-clients"))


def _run_pods_reach_kafka(objects: list[Obj]) -> None:
    policy = checks.one(objects, "NetworkPolicy", "pfactory-trainer-run")
    policy["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 9092}]})


def _gateway_closed(objects: list[Obj]) -> None:
    objects.remove(checks.one(objects, "NetworkPolicy", "pfactory-gateway-ingress"))


def _wrong_group(objects: list[Obj]) -> None:
    scaled = checks.one(objects, "ScaledObject", "pfactory-scorer")
    scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "scorer"


def _wrong_lag_topic(objects: list[Obj]) -> None:
    scaled = checks.one(objects, "ScaledObject", "pfactory-registrar")
    scaled["spec"]["triggers"][0]["metadata"]["topic"] = "pf.model.registered"


def _too_many_replicas(objects: list[Obj]) -> None:
    checks.one(objects, "ScaledObject", "pfactory-trainer")["spec"]["maxReplicaCount"] = 10


def _wrong_bootstrap(objects: list[Obj]) -> None:
    scaled = checks.one(objects, "ScaledObject", "pfactory-materialiser")
    scaled["spec"]["triggers"][0]["metadata"]["bootstrapServers"] = "kafka:9092"


def _hpa_and_keda(objects: list[Obj]) -> None:
    objects.append(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "pfactory-scorer", "namespace": "pfactory"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "pfactory-scorer"}
            },
        }
    )


def _alerter_scaled(objects: list[Obj]) -> None:
    scaled = copy.deepcopy(checks.one(objects, "ScaledObject", "pfactory-scorer"))
    scaled["metadata"]["name"] = scaled["spec"]["scaleTargetRef"]["name"] = "pfactory-alerter"
    objects.append(scaled)


def _secret_in_git(objects: list[Obj]) -> None:
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pfactory-alerter-keys"},
            "stringData": {"a": "b"},
        }
    )


def _literal_key(objects: list[Obj]) -> None:
    set_env(objects, "alerter", "PF_ALERTER_DATADOG_API_KEY", "d" * 32)


def _misspelt_keda_field(objects: list[Obj]) -> None:
    checks.one(objects, "ScaledObject", "pfactory-scorer")["spec"]["maxReplicas"] = 3


def _keda_non_string_metadata(objects: list[Obj]) -> None:
    checks.one(objects, "ScaledObject", "pfactory-scorer")["spec"]["triggers"][0]["metadata"][
        "lagThreshold"
    ] = 5


def _topic_without_cluster(objects: list[Obj]) -> None:
    del next(o for o in objects if o["kind"] == "KafkaTopic")["metadata"]["labels"]["strimzi.io/cluster"]


def _bad_builtin_field(objects: list[Obj]) -> None:
    container(objects, "gateway")["livenessProbe"]["httpGet"]["paht"] = "/health"


def _unknown_kind(objects: list[Obj]) -> None:
    objects.append(
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "x"}}
    )


Mutation = Callable[[list[Obj]], None]
BROKEN: list[tuple[str, Mutation, str]] = [
    ("env", _misspell_setting, "PF_SCORER_STORE_ROTO is not a settings field of scorer"),
    ("env", _misspell_configmap_key, "PF_BUS_BOOTSTRAP_SERVER is not a settings field"),
    ("env", _invalid_value, "TrainerSettings refuses the manifest's environment"),
    ("env", _registry_env_on_alerter, "PF_REGISTRY_BACKEND is not a settings field of alerter"),
    ("env", _loopback_bind, "set PF_REGISTRAR_HEALTH_HOST=0.0.0.0"),
    ("env", _unknown_secret, "which SECRET_SAMPLES does not list"),
    ("ports", _wrong_port, "containerPorts [8101] but MaterialiserSettings.health_port is 8102"),
    ("ports", _port_override_without_container_port, "AlerterSettings.health_port is 9000"),
    ("ports", _readiness_on_health, "readinessProbe is /health"),
    ("ports", _wrong_image, "image 'pfactory-registry:dev' is not pfactory-registrar"),
    ("ports", _online_without_args, "the image's entrypoint wants ('online',)"),
    ("security", _root_user, "runAsUser 10001"),
    ("security", _writable_root, "readOnlyRootFilesystem"),
    ("security", _no_limits, "set limits for cpu and memory"),
    ("security", _stateful_rolling, "needs replicas 1 and strategy Recreate"),
    ("security", _stateful_scaled, "needs replicas 1 and strategy Recreate"),
    ("network", _no_default_deny, "no default-deny NetworkPolicy"),
    ("network", _all_egress, "egress rule without ports"),
    ("network", _unselected_deployment, "Deployment/pfactory-registrar: no NetworkPolicy selects its pods"),
    ("network", _no_kafka_egress, "consumes Kafka but no policy allows egress"),
    ("network", _run_pods_reach_kafka, "may reach only DNS and 443, not [9092]"),
    ("network", _gateway_closed, "no NetworkPolicy lets traffic in to Deployment/pfactory-gateway:8080"),
    ("secrets", _secret_in_git, "keep secret values out of git"),
    ("secrets", _literal_key, "PF_ALERTER_DATADOG_API_KEY has a literal value"),
    ("schema", _bad_builtin_field, "Additional properties are not allowed ('paht'"),
    ("schema", _unknown_kind, "PodMonitor has no schema"),
]
BROKEN_PROD: list[tuple[str, Mutation, str]] = [
    ("autoscaling", _wrong_group, "consumerGroup 'scorer', the worker uses 'pf-scorer'"),
    ("autoscaling", _wrong_lag_topic, "topic 'pf.model.registered', the worker consumes 'pf.model.trained'"),
    ("autoscaling", _too_many_replicas, "maxReplicaCount 10 exceeds pf.train.requested's 6 partitions"),
    ("autoscaling", _wrong_bootstrap, "bootstrapServers 'kafka:9092'"),
    ("autoscaling", _hpa_and_keda, "Deployment/pfactory-scorer is scaled by"),
    ("autoscaling", _alerter_scaled, "Deployment/pfactory-alerter must not be autoscaled"),
    ("schema", _misspelt_keda_field, "Additional properties are not allowed ('maxReplicas'"),
    ("schema", _keda_non_string_metadata, "5 is not of type 'string'"),
    ("schema", _topic_without_cluster, "'strimzi.io/cluster' is a required property"),
]


def _assert_caught(objects: list[Obj], check: str, mutate: Mutation, expected: str) -> None:
    assert checks.CHECKS[check](objects) == []
    mutate(objects)
    problems = checks.CHECKS[check](objects)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(("check", "mutate", "expected"), BROKEN, ids=[m.__name__[1:] for _, m, _ in BROKEN])
def test_check_catches_broken_manifest(check: str, mutate: Mutation, expected: str) -> None:
    _assert_caught(overlay("dev"), check, mutate, expected)


@pytest.mark.parametrize(
    ("check", "mutate", "expected"), BROKEN_PROD, ids=[m.__name__[1:] for _, m, _ in BROKEN_PROD]
)
def test_check_catches_broken_prod_manifest(check: str, mutate: Mutation, expected: str) -> None:
    _assert_caught(overlay("prod"), check, mutate, expected)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_missing_topic, "has no KafkaTopic"),
        (_wrong_partitions, "KafkaTopic pf.train.requested: partitions 12, the contract says 6"),
        (_wrong_retention, "KafkaTopic pf.alerts: retention.ms 1000"),
        (_extra_topic, "KafkaTopic pf.unknown is not a contract topic"),
    ],
    ids=["missing", "partitions", "retention", "extra"],
)
def test_topic_check_catches(mutate: Mutation, expected: str) -> None:
    objects = overlay("prod")
    mutate(objects)
    problems = checks.topic_problems(objects, replicas=3, min_insync=2)
    assert any(expected in problem for problem in problems), problems


def test_topic_check_catches_dev_replicas_in_prod() -> None:
    problems = checks.topic_problems(overlay("dev"), replicas=3, min_insync=2)
    assert len(problems) == 2 * len(ALL_TOPICS)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_template_drift, "spec.volumes"),
        (_settings_drift, "spec.serviceAccountName"),
        (_image_drift, "not the trainer's own image 'pfactory-trainer:other'"),
    ],
    ids=["template", "settings", "image"],
)
def test_pod_template_check_catches(mutate: Mutation, expected: str) -> None:
    objects = overlay("dev")
    mutate(objects)
    problems = checks.pod_template_problems(objects, built_run_pod(objects))
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_extra_verb, "grants [('pods', 'patch')] beyond the launcher's calls"),
        (_missing_log_access, "lacks [('pods/log', 'get')]"),
        (_cluster_role, "ClusterRole/pfactory-trainer: nothing may be granted cluster-wide"),
        (_runner_bound, "ServiceAccount pfactory-trainer-runner (the run pods') must be bound to nothing"),
    ],
    ids=["extra-verb", "missing-log", "cluster-role", "runner-bound"],
)
def test_rbac_check_catches(mutate: Mutation, expected: str) -> None:
    objects = overlay("dev")
    mutate(objects)
    needed = checks.launcher_permissions(checks.LAUNCHER.read_text(encoding="utf-8"))
    problems = checks.rbac_problems(objects, needed)
    assert any(expected in problem for problem in problems), problems


def test_launcher_permissions_follow_the_code() -> None:
    source = "await core.patch_namespaced_pod(name, ns, body)\nawait core.read_namespaced_pod_log(name, ns)"
    assert checks.launcher_permissions(source) == {("pods", "patch"), ("pods/log", "get")}
    with pytest.raises(ValueError, match=r"map it in k8s_checks\.py"):
        checks.launcher_permissions("await core.create_namespaced_pod_eviction(name, ns, body)")


def test_render_reports_kustomize_errors(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match=r"kubectl kustomize .* failed"):
        checks.render(tmp_path)


def test_selector_matching() -> None:
    labels: dict[str, Any] = {"app.kubernetes.io/name": "pfactory-scorer", "tier": "x"}
    assert checks.selects({"matchLabels": {"tier": "x"}}, labels)
    assert not checks.selects({"matchLabels": {"tier": "y"}}, labels)
    expression = {"key": "app.kubernetes.io/name", "operator": "In", "values": ["pfactory-scorer"]}
    assert checks.selects({"matchExpressions": [expression]}, labels)
    assert not checks.selects({"matchExpressions": [{**expression, "operator": "NotIn"}]}, labels)
    assert checks.selects({"matchExpressions": [{"key": "other", "operator": "DoesNotExist"}]}, labels)
