"""Scheduler settings (env prefix ``PF_SCHEDULER_``; Kafka from ``PF_BUS_``, the registry from ``PF_REGISTRY_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from pfactory.bus.settings import ServiceSettings
from pfactory.scheduler.dags import ScorerPod


class SchedulerSettings(ServiceSettings):
    """Everything the scheduler needs to run, read from the environment at its entry point.

    The optional pod settings (``PF_SCHEDULER_POD_*``, ``SCORER_IMAGE``) read an empty value as unset.
    """

    model_config = SettingsConfigDict(env_prefix="PF_SCHEDULER_", extra="forbid")

    group_id: str = Field(
        default="pf-scheduler",
        description="Consumer group of ``pf.model.registered`` and ``pf.model.changed``.",
    )
    health_port: int = Field(default=8104, ge=0, le=65535, description="Port of /health and /ready.")
    poll_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between polls of the registry's change log (the safety net for missed events).",
    )
    tick_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between checks for versions due to go live and schedules firing.",
    )
    dags_folder: Path | None = Field(
        default=None,
        description="Airflow's DAGs folder: when set (or dags_s3_bucket), the scheduler writes one DAG per "
        "deployed version there and Airflow runs the schedules; unset, the embedded cron runner does.",
    )
    dags_s3_bucket: str | None = Field(
        default=None, description="Bucket of a DAGs prefix Airflow syncs from."
    )
    dags_s3_prefix: str = Field(default="dags/", description="Prefix of the DAG files in dags_s3_bucket.")
    dags_s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint override (tests, MinIO).")
    api_url: str = Field(
        default="http://127.0.0.1:8080",  # the gateway default port
        description="The gateway's URL as Airflow's workers reach it (the generated DAGs call it).",
    )
    dag_retries: int = Field(default=2, ge=0, description="Retries of each task of a generated DAG.")
    dag_poke_s: int = Field(
        default=300,
        gt=0,
        description="Seconds between a generated DAG's checks (features there, run finished).",
    )
    state_dir: Path = Field(
        default=Path(".pfactory/scheduler"),
        description="Where the scheduler keeps the schedules of submitted feature sets (feature-sets.json) "
        "and the embedded runner's last tick (last-tick.json).",
    )
    catch_up_s: float = Field(
        default=86_400.0,
        ge=0,
        description="How far back a restarted embedded runner fires the schedules it missed while down "
        "(from the last tick it recorded in state_dir). 0: fire nothing missed.",
    )
    clock_offset_s: float = Field(
        default=0.0,
        description="Seconds added to the wall clock: lets a demo or a test reach tomorrow's go-live and "
        "schedules now. Leave 0 in production.",
    )
    dag_runner: Literal["http", "kubernetes"] = Field(
        default="http",
        description="How a generated scoring DAG scores its day: 'http' starts a scoring run through the "
        "gateway's API and follows it (the scorer worker does the work); 'kubernetes' runs the scorer image's "
        "one-shot entrypoint (python -m pfactory.scorer.once) in a pod with KubernetesPodOperator (Airflow "
        "needs apache-airflow-providers-cncf-kubernetes). Both wait for the day's features through the API "
        "and raise an alert through it when a task fails. Only with dags_folder or dags_s3_bucket.",
    )
    scorer_image: str | None = Field(
        default=None,
        description="dag_runner=kubernetes: the scorer image, with a tag or digest "
        "(registry.example.com/pfactory/scorer:1.4.2); it must hold the scorer package and a 'python'.",
    )
    pod_namespace: str | None = Field(
        default=None,
        description="dag_runner=kubernetes: the pods' namespace; unset: the Airflow Kubernetes connection's, "
        "else the namespace Airflow runs in, else 'default'.",
    )
    pod_service_account: str | None = Field(
        default=None,
        description="dag_runner=kubernetes: the pods' service account, the identity that reads the registry "
        "and the feature store and writes predictions (e.g. bound to an IAM role); unset: the namespace's "
        "default account.",
    )
    pod_cpu_request: str | None = Field(
        default="500m", description="dag_runner=kubernetes: CPU the pod requests (a Kubernetes quantity)."
    )
    pod_cpu_limit: str | None = Field(
        default=None,
        description="dag_runner=kubernetes: the pod's CPU limit; unset (the default): no limit, no throttling.",
    )
    pod_memory_request: str | None = Field(
        default="1Gi",
        description="dag_runner=kubernetes: memory the pod requests. Scoring streams the day in "
        "record batches (PF_SCORER_BATCH_ROWS), so it grows with the model, not the day's size.",
    )
    pod_memory_limit: str | None = Field(
        default="2Gi",
        description="dag_runner=kubernetes: the pod's memory limit (above it Kubernetes kills the pod).",
    )
    pod_env_config_maps: list[str] = Field(
        default_factory=list,
        description="dag_runner=kubernetes: ConfigMaps whose keys become the pod's environment (JSON list), "
        "e.g. one holding PF_SCORER_STORE_ROOT, PF_REGISTRY_* and PF_BUS_BOOTSTRAP_SERVERS.",
    )
    pod_env_secrets: list[str] = Field(
        default_factory=list,
        description="dag_runner=kubernetes: Secrets whose keys become the pod's environment (JSON list), "
        "e.g. PF_BUS_SASL_PASSWORD or cloud credentials.",
    )
    pod_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="dag_runner=kubernetes: the image pull policy; unset: Kubernetes' default."
    )
    pod_startup_timeout_s: int = Field(
        default=600,
        gt=0,
        description="dag_runner=kubernetes: seconds a pod may take to be scheduled and pull its image "
        "before the task fails (and retries).",
    )
    pod_kubernetes_conn_id: str = Field(
        default="kubernetes_default",
        description="dag_runner=kubernetes: the Airflow connection to the cluster; when it does not exist, "
        "Airflow uses its in-cluster service account, else its kube config.",
    )
    pod_publish_events: bool = Field(
        default=True,
        description="dag_runner=kubernetes: the pod publishes the scorer's events (ScoringCompleted, "
        "DriftDetected, job status) to Kafka as the worker does, so drift alerts work as with 'http'; its "
        "environment then needs PF_BUS_*. false: the results are only in the task's log.",
    )

    @field_validator(
        "scorer_image",
        "pod_namespace",
        "pod_service_account",
        "pod_cpu_request",
        "pod_cpu_limit",
        "pod_memory_request",
        "pod_memory_limit",
        "pod_image_pull_policy",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # PF_SCHEDULER_POD_MEMORY_LIMIT= (empty) unsets a default, e.g. for no memory limit
        return None if value == "" else value

    @model_validator(mode="after")
    def _runner(self) -> SchedulerSettings:
        if self.dag_runner == "http":
            if self.scorer_image is not None:
                raise ValueError(
                    "PF_SCHEDULER_SCORER_IMAGE is set but PF_SCHEDULER_DAG_RUNNER is 'http', which ignores it: "
                    "set PF_SCHEDULER_DAG_RUNNER=kubernetes to score in pods, or unset the image"
                )
            return self
        if self.dags_folder is None and self.dags_s3_bucket is None:
            raise ValueError(
                "PF_SCHEDULER_DAG_RUNNER=kubernetes is for the DAGs the scheduler writes for Airflow, but neither "
                "PF_SCHEDULER_DAGS_FOLDER nor PF_SCHEDULER_DAGS_S3_BUCKET is set (the embedded runner scores "
                "through the scorer worker): set one of them, or drop DAG_RUNNER"
            )
        if self.scorer_image is None:
            raise ValueError(
                "PF_SCHEDULER_DAG_RUNNER=kubernetes needs PF_SCHEDULER_SCORER_IMAGE, the scorer image the pods "
                "run, with a tag or digest (e.g. registry.example.com/pfactory/scorer:1.4.2)"
            )
        try:
            self.scorer_pod()
        except ValueError as error:
            raise ValueError(
                f"PF_SCHEDULER_DAG_RUNNER=kubernetes: {error} (check the PF_SCHEDULER_POD_* and SCORER_IMAGE settings)"
            ) from None
        return self

    def scorer_pod(self) -> ScorerPod | None:
        """The pod the generated scoring DAGs run (None with dag_runner='http').

        Raises:
            ValueError: a pod setting Kubernetes would refuse; the message names it.
        """
        if self.dag_runner != "kubernetes" or self.scorer_image is None:
            return None
        return ScorerPod(
            image=self.scorer_image,
            namespace=self.pod_namespace,
            service_account=self.pod_service_account,
            cpu_request=self.pod_cpu_request,
            memory_request=self.pod_memory_request,
            cpu_limit=self.pod_cpu_limit,
            memory_limit=self.pod_memory_limit,
            env_config_maps=tuple(self.pod_env_config_maps),
            env_secrets=tuple(self.pod_env_secrets),
            image_pull_policy=self.pod_image_pull_policy,
            startup_timeout_s=self.pod_startup_timeout_s,
            kubernetes_conn_id=self.pod_kubernetes_conn_id,
            publish_events=self.pod_publish_events,
        )
