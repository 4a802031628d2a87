"""The scoring DAG's pod variant (``PF_SCHEDULER_DAG_RUNNER=kubernetes``): settings to spec to DAG file to the
pod a real Airflow 3.3 with the cncf-kubernetes provider would ask Kubernetes for.

``airflow dags test`` cannot run this DAG here: there is no Kubernetes API server to create the pod on
(``tests/utils/fake_kubernetes.py`` serves only the pod calls of the trainer's launcher, not the
listing, log-following and event calls KubernetesPodOperator makes). What runs inside the pod, the one-shot
scorer, is tested as a real process in ``tests/workers/scorer/test_once.py``; here the DAG is loaded by
Airflow and its task builds its pod for a run, exactly as ``execute`` does before calling the API.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from pfactory.scheduler.adapters.dag_writer import LocalDagWriter
from pfactory.scheduler.airflow import AirflowDags
from pfactory.scheduler.app import build_dags
from pfactory.scheduler.dags import ScorerPod, parse_quantity, render_scoring_dag
from pfactory.scheduler.settings import SchedulerSettings
from tests.registry.factories import PAIR, make_version
from tests.workers.scheduler.airflow_env import AirflowEnv
from tests.workers.scheduler.test_dags import (
    ALLOWED_IMPORT_ROOTS,
    HOSTILE,
    code_of,
    constants_of,
    import_roots,
    scoring_spec,
)

IMAGE = "registry.example.com:5000/pfactory/scorer:1.4.2"
FULL = ScorerPod(
    image=IMAGE,
    namespace="scoring",
    service_account="pf-scorer",
    cpu_request="500m",
    memory_request="1Gi",
    cpu_limit="2",
    memory_limit="2Gi",
    env_config_maps=("pf-scorer", "pf-bus"),
    env_secrets=("pf-scorer-aws",),
    image_pull_policy="IfNotPresent",
    startup_timeout_s=900,
    kubernetes_conn_id="k8s_scoring",
)
MINIMAL = ScorerPod(
    image="pfactory/scorer@sha256:" + "ab" * 32,
    namespace="default",
    cpu_request=None,
    memory_request=None,
    memory_limit=None,
    publish_events=False,
)
HOSTILE_MODEL = "-{{ ds }}'\"); import os #"


# --- static checks ---------------------------------------------------------------------------------------


def test_the_pod_variant_imports_only_airflow_kubernetes_and_the_standard_library() -> None:
    source = render_scoring_dag(scoring_spec(pod=FULL))
    compile(source, "generated_dag.py", "exec")
    assert import_roots(source) == ALLOWED_IMPORT_ROOTS | {"kubernetes"}
    assert "from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator" in source
    # and the HTTP variant still does not
    assert "kubernetes" not in import_roots(render_scoring_dag(scoring_spec()))


def test_hostile_values_and_other_pod_settings_leave_the_pod_variant_code_unchanged() -> None:
    plain = scoring_spec(pod=FULL)
    hostile = scoring_spec(
        pod=MINIMAL,
        model_name=HOSTILE_MODEL,
        feature_set_name="{% raw %}fs'''",
        feature_set_version="1.{{ x }}",
        doc_md=HOSTILE,
        owner='o\'wner""" {{ x }}\n#',
        tags=("'); x('", "{{ t }}"),
    )
    source = render_scoring_dag(hostile)

    assert code_of(source) == code_of(render_scoring_dag(plain))
    constants = constants_of(source)
    assert constants["SCORER_ARGUMENTS"] == [
        f"--model={HOSTILE_MODEL}",  # '=': a name starting with '-' cannot pass for an option
        "--feature-set={% raw %}fs'''@1.{{ x }}",
        "--version=4",
        "--termination-log=/dev/termination-log",
    ]
    assert constants["DOC_MD"] == HOSTILE and constants["MODEL_NAME"] == HOSTILE_MODEL
    full = constants_of(render_scoring_dag(plain))
    assert full["SCORER_ARGUMENTS"][-1] == "--publish"
    assert (full["SCORER_IMAGE"], full["POD_NAMESPACE"], full["POD_SERVICE_ACCOUNT"]) == (
        IMAGE,
        "scoring",
        "pf-scorer",
    )
    assert full["POD_RESOURCES"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    assert (full["POD_ENV_CONFIG_MAPS"], full["POD_ENV_SECRETS"]) == (
        ["pf-scorer", "pf-bus"],
        ["pf-scorer-aws"],
    )
    assert constants["POD_RESOURCES"] is None and constants["POD_SERVICE_ACCOUNT"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image": "pfactory/scorer"}, "names no tag or digest"),
        ({"image": "https://registry.example.com/scorer:1"}, "is not an image reference"),
        ({"image": "Registry.example.com/PFactory/scorer:1"}, "path in lower case"),
        ({"image": "pfactory/scorer:1 --privileged"}, "is not an image reference"),
        ({"image": "pfactory/scorer:-1"}, "is not an image reference"),
        ({"image": "pfactory/scorer@sha256:abc"}, "is not an image reference"),
        ({"image": "a/" + "b" * 260 + ":1"}, "longer than 255"),
        ({"namespace": "Scoring"}, "namespace 'Scoring' is not a Kubernetes name: a DNS label"),
        ({"namespace": "n" * 64}, "at most 63"),
        ({"service_account": "pf_scorer"}, "service_account 'pf_scorer' is not a Kubernetes name"),
        ({"cpu_request": "half"}, "cpu_request 'half' is not a Kubernetes quantity"),
        ({"memory_limit": "2GB"}, "memory_limit '2GB' is not a Kubernetes quantity"),
        ({"memory_request": "0"}, "must be more than zero"),
        ({"memory_request": "3Gi", "memory_limit": "2Gi"}, "memory_request '3Gi' is more than memory_limit"),
        ({"cpu_request": "2", "cpu_limit": "1500m"}, "cpu_request '2' is more than cpu_limit '1500m'"),
        ({"env_config_maps": ("My Map",)}, "env_config_maps 'My Map' is not a Kubernetes name"),
        ({"env_secrets": ("s", "s")}, "names \\['s', 's'\\] more than once"),
        ({"image_pull_policy": "Sometimes"}, "must be one of Always, IfNotPresent, Never"),
        ({"startup_timeout_s": 0}, "startup_timeout_s must be a positive"),
        ({"kubernetes_conn_id": "k8s conn"}, "Airflow connection id"),
    ],
)
def test_invalid_pod_settings_are_refused_with_the_reason(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(FULL, **changes)


def test_quantities_are_read_as_kubernetes_reads_them() -> None:
    assert parse_quantity("cpu", "500m") == Decimal("0.5")
    assert parse_quantity("cpu", "1.5") == Decimal("1.5")
    assert parse_quantity("memory", "1Gi") == 2**30
    assert parse_quantity("memory", "512M") == 512 * 10**6
    assert parse_quantity("memory", "1e3") == 1000 and parse_quantity("memory", "2E") == 2 * 10**18
    assert parse_quantity("cpu", ".5") < parse_quantity("cpu", "600m")


# --- settings --------------------------------------------------------------------------------------------


def test_the_settings_choose_the_pod_variant_and_refuse_what_kubernetes_would(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PF_SCHEDULER_DAGS_FOLDER", str(tmp_path))
    assert SchedulerSettings().scorer_pod() is None  # http by default
    for name, value in {
        "DAG_RUNNER": "kubernetes",
        "SCORER_IMAGE": IMAGE,
        "POD_NAMESPACE": "scoring",
        "POD_SERVICE_ACCOUNT": "pf-scorer",
        "POD_CPU_LIMIT": "2",
        "POD_ENV_CONFIG_MAPS": '["pf-scorer", "pf-bus"]',
        "POD_ENV_SECRETS": '["pf-scorer-aws"]',
        "POD_IMAGE_PULL_POLICY": "IfNotPresent",
        "POD_STARTUP_TIMEOUT_S": "900",
        "POD_KUBERNETES_CONN_ID": "k8s_scoring",
    }.items():
        monkeypatch.setenv(f"PF_SCHEDULER_{name}", value)
    settings = SchedulerSettings()
    assert settings.scorer_pod() == FULL  # the defaults: 500m and 1Gi requested, 2Gi memory limit
    dags = build_dags(settings)
    assert isinstance(dags, AirflowDags) and dags.pod == FULL
    monkeypatch.setenv("PF_SCHEDULER_POD_MEMORY_LIMIT", "")  # empty: unset the default limit
    assert SchedulerSettings().scorer_pod() == replace(FULL, memory_limit=None)
    monkeypatch.delenv("PF_SCHEDULER_POD_MEMORY_LIMIT")

    monkeypatch.setenv("PF_SCHEDULER_SCORER_IMAGE", "pfactory/scorer")
    with pytest.raises(
        ValidationError, match="DAG_RUNNER=kubernetes: the scorer image 'pfactory/scorer' names no tag"
    ):
        SchedulerSettings()
    monkeypatch.setenv("PF_SCHEDULER_SCORER_IMAGE", IMAGE)
    monkeypatch.setenv("PF_SCHEDULER_POD_MEMORY_REQUEST", "4Gi")
    with pytest.raises(ValidationError, match="memory_request '4Gi' is more than memory_limit '2Gi'"):
        SchedulerSettings()
    monkeypatch.delenv("PF_SCHEDULER_POD_MEMORY_REQUEST")
    monkeypatch.delenv("PF_SCHEDULER_SCORER_IMAGE")
    with pytest.raises(ValidationError, match="needs PF_SCHEDULER_SCORER_IMAGE"):
        SchedulerSettings()
    monkeypatch.setenv("PF_SCHEDULER_SCORER_IMAGE", IMAGE)
    monkeypatch.delenv("PF_SCHEDULER_DAGS_FOLDER")
    with pytest.raises(
        ValidationError, match="neither PF_SCHEDULER_DAGS_FOLDER nor PF_SCHEDULER_DAGS_S3_BUCKET"
    ):
        SchedulerSettings()
    monkeypatch.setenv("PF_SCHEDULER_DAGS_FOLDER", str(tmp_path))
    monkeypatch.setenv("PF_SCHEDULER_DAG_RUNNER", "http")
    with pytest.raises(ValidationError, match="SCORER_IMAGE is set but PF_SCHEDULER_DAG_RUNNER is 'http'"):
        SchedulerSettings()


# --- Airflow itself --------------------------------------------------------------------------------------


@pytest.mark.integration
def test_airflow_loads_the_pod_variant_and_builds_the_pod_the_settings_asked_for(
    airflow: AirflowEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "dags"
    # 1. through the settings, as the scheduler writes it: a version scored at 03:00 in Kolkata
    monkeypatch.setenv("PF_SCHEDULER_DAGS_FOLDER", str(folder))
    monkeypatch.setenv("PF_SCHEDULER_DAG_RUNNER", "kubernetes")
    monkeypatch.setenv("PF_SCHEDULER_SCORER_IMAGE", IMAGE)
    monkeypatch.setenv("PF_SCHEDULER_POD_NAMESPACE", "scoring")
    monkeypatch.setenv("PF_SCHEDULER_POD_SERVICE_ACCOUNT", "pf-scorer")
    monkeypatch.setenv("PF_SCHEDULER_POD_CPU_LIMIT", "2")
    monkeypatch.setenv("PF_SCHEDULER_POD_ENV_CONFIG_MAPS", '["pf-scorer", "pf-bus"]')
    monkeypatch.setenv("PF_SCHEDULER_POD_ENV_SECRETS", '["pf-scorer-aws"]')
    monkeypatch.setenv("PF_SCHEDULER_POD_IMAGE_PULL_POLICY", "IfNotPresent")
    monkeypatch.setenv("PF_SCHEDULER_POD_STARTUP_TIMEOUT_S", "900")
    monkeypatch.setenv("PF_SCHEDULER_POD_KUBERNETES_CONN_ID", "k8s_scoring")
    settings = SchedulerSettings(dag_retries=1)
    dags = build_dags(settings)
    assert isinstance(dags, AirflowDags) and isinstance(dags.writer, LocalDagWriter)
    config = {
        "kind": "Model",
        "metadata": {"name": PAIR.model_name, "owner": "risk-team"},
        "spec": {"scoring": {"schedule": "0 3 * * *", "timezone": "Asia/Kolkata"}},
    }
    version = make_version(PAIR, 4, "k", config=config)
    deployed = asyncio.run(dags.deploy(version, date(2026, 3, 7)))
    # 2. a bare pod (image only) and a hostile model name, in UTC; 3. the HTTP variant beside them
    hostile = scoring_spec(pod=MINIMAL, model_name=HOSTILE_MODEL, doc_md=HOSTILE, timezone="UTC")
    http = scoring_spec(model_name="over_http")
    for spec in (hostile, http):
        (folder / f"{spec.dag_id}.py").write_text(render_scoring_dag(spec), encoding="utf-8")
    # 03:00 in Kolkata on 10 March is 21:30 UTC on 9 March: each DAG's day is its zone's
    logical = datetime(2026, 3, 10, 3, 0, tzinfo=ZoneInfo("Asia/Kolkata"))

    report = airflow.load_dags(folder, pods_at=logical, serialize=True)

    assert report.import_errors == {}
    assert report.warnings == {}, report.warnings  # deprecations would be import errors, others here
    assert sorted(report.dags) == sorted([deployed, hostile.dag_id, http.dag_id])
    assert all(dag["serialized"] is True for dag in report.dags.values()), report.dags
    over_http: dict[str, Any] = report.dags[http.dag_id]["tasks"]  # type: ignore[assignment]
    assert list(over_http) == ["wait_for_features", "start_scoring", "wait_for_scoring"]
    assert not any("pod" in task for task in over_http.values())
    for dag_id in (deployed, hostile.dag_id):
        tasks: dict[str, Any] = report.dags[dag_id]["tasks"]  # type: ignore[assignment]
        assert list(tasks) == ["wait_for_features", "score"]
        assert tasks["wait_for_features"]["type"] == "PythonSensor"
        assert tasks["wait_for_features"]["downstream"] == ["score"]
        score = tasks["score"]
        assert score["type"] == "ScoringPod" and score["on_failure_callback"] == ["_on_failure"]
        assert score["pod"]["template_fields"] == []  # nothing is Jinja: the names stay data
    main: dict[str, Any] = report.dags[deployed]["tasks"]["score"]  # type: ignore[index]
    assert main["retries"] == 1 and main["execution_timeout"] == 3600
    pod = main["pod"]["spec"]
    (container,) = pod["spec"]["containers"]
    assert pod["metadata"]["namespace"] == "scoring"
    assert pod["spec"]["serviceAccountName"] == "pf-scorer"
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["activeDeadlineSeconds"] == 3600
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["python", "-m", "pfactory.scorer.once"]
    assert container["args"] == [
        "--model=credit_default",
        "--feature-set=credit_features@3",
        "--version=4",
        "--termination-log=/dev/termination-log",
        "--publish",
        "--ds=2026-03-10",  # Kolkata's day (Airflow's UTC {{ ds }} would be 2026-03-09)
        f"--job-id={deployed}-2026-03-10-t1",
    ]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    assert container["envFrom"] == [
        {"configMapRef": {"name": "pf-scorer"}},
        {"configMapRef": {"name": "pf-bus"}},
        {"secretRef": {"name": "pf-scorer-aws"}},
    ]
    assert container["terminationMessagePolicy"] == "File"
    assert pod["metadata"]["labels"]["dag_id"] == deployed
    assert f"in a Kubernetes pod (`{IMAGE}`)." in str(report.dags[deployed]["doc_md"])

    bare = report.dags[hostile.dag_id]["tasks"]["score"]["pod"]["spec"]  # type: ignore[index]
    (bare_container,) = bare["spec"]["containers"]
    assert bare_container["args"][:2] == [f"--model={HOSTILE_MODEL}", "--feature-set=credit_features@3"]
    assert bare_container["args"][-2] == "--ds=2026-03-09"  # UTC's day
    assert "--publish" not in bare_container["args"]
    assert bare_container["image"] == MINIMAL.image and bare["metadata"]["namespace"] == "default"
    assert "serviceAccountName" not in bare["spec"] and "imagePullPolicy" not in bare_container
    assert "resources" not in bare_container and bare_container["envFrom"] == []
