"""Airflow 3 DAG files for scoring and materialisation, rendered as Python source text.

Pure functions: no I/O, no Airflow import. A generated file imports only ``airflow.sdk``,
``airflow.providers.standard``, pendulum (which Airflow ships) and the standard library, never
``pfactory``: it talks to the platform through the gateway's HTTP API alone. The scoring DAG's pod
variant (a spec with a :class:`ScorerPod`) also imports ``airflow.providers.cncf.kubernetes`` and the
``kubernetes`` client: it waits for the features through the API as the other does, then scores the day
in one pod running the scorer image's one-shot entrypoint (``python -m pfactory.scorer.once``) instead
of starting a run through the API and following it.

Every value from a spec enters the source as a ``repr()`` literal assigned to a module constant; the
task code itself is fixed text that reads those constants. So a model card holding quotes, triple
quotes, ``{{ }}`` or code stays data (and no value is passed through a templated field, so Jinja never
sees it either; the pod variant's operator templates no field at all, so the model name in its
arguments is not read as Jinja).

Schedule: ``CronTriggerTimetable(cron, timezone=zone)``, so the run fired at 06:00 on day D has logical
date D 06:00 in the zone (a zero-length data interval), not the previous interval's start as with
``CronDataIntervalTimetable``. The day a run works on (``ds``) is that logical date's calendar date *in
the DAG's zone*, computed inside the tasks: Airflow's ``{{ ds }}`` is the UTC date, which is the
previous day for e.g. Asia/Kolkata before 05:30 and the next day for America/New_York after 19:00
(20:00 in summer).
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pfactory.contracts.cron import MACROS, parse_cron

DAG_ID_MAX = 250  # Airflow's ID_LEN
TAG_MAX = 100  # Airflow's TAG_MAX_LEN
IDEMPOTENCY_PREFIX_MAX = 100  # the gateway's run-id pattern allows 128 chars: prefix + "-YYYY-MM-DD-rNN"
ALERT_KEY_MAX = 200  # the alerts API's dedup_key pattern allows 200 chars
DAG_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
VARIABLE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
SCORER_COMMAND = ("python", "-m", "pfactory.scorer.once")
TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
IMAGE_NAME_MAX = 255  # the name part of an image reference (docker/distribution's NameTotalLengthMax)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# An image reference as docker/distribution's reference grammar has it: [host[:port]/]path[:tag][@digest]
_IMAGE_HOST = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?P<name>(?:{_IMAGE_HOST}/)?{_IMAGE_PATH}(?:/{_IMAGE_PATH})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?",
    re.ASCII,
)
# A Kubernetes resource quantity: a decimal number with an SI or binary suffix, or an exponent
_QUANTITY = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]+)?", re.ASCII
)
_SUFFIX_SCALE = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    **{s: Decimal(1000) ** (n + 1) for n, s in enumerate("kMGTPE")},
    **{f"{s}i": Decimal(1024) ** (n + 1) for n, s in enumerate("KMGTPE")},
}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class ScorerPod:
    """How the pod variant of the scoring DAG runs the scorer: one Kubernetes pod per day.

    The pod runs ``python -m pfactory.scorer.once`` from ``image`` (which must hold the scorer package)
    with the run's model, version, feature set and day, and reads everything else (``PF_SCORER_*``,
    ``PF_REGISTRY_*``, ``PF_BUS_*``) from the ConfigMaps and Secrets named here.

    Attributes:
        image: the scorer image with a tag or digest, e.g. ``registry.example.com/pfactory/scorer:1.4.2``
            (no implicit ``latest``: every run of a version uses the same scorer).
        namespace: the pod's namespace; None: the Airflow Kubernetes connection's, else the one Airflow
            runs in, else ``default``.
        service_account: the pod's service account (the identity that reads the registry and the store);
            None: the namespace's default account.
        cpu_request / memory_request / cpu_limit / memory_limit: Kubernetes quantities (``500m``, ``2``,
            ``1Gi``, ``512Mi``); None leaves that one unset. A request may not exceed its limit.
        env_config_maps / env_secrets: ConfigMaps and Secrets whose keys become the container's
            environment (``envFrom``), e.g. one holding ``PF_SCORER_STORE_ROOT`` and ``PF_REGISTRY_*``.
        image_pull_policy: ``Always``, ``IfNotPresent`` or ``Never``; None: Kubernetes' default.
        startup_timeout_s: how long the pod may take to start (scheduling and image pull) before the
            task fails.
        kubernetes_conn_id: the Airflow connection to the cluster (its absence means in-cluster, else
            the worker's kube config).
        publish_events: pass ``--publish``: the pod publishes the scorer's events (``ScoringCompleted``,
            ``DriftDetected``...) to Kafka as the worker does; its environment must then hold ``PF_BUS_*``.
    """

    image: str
    namespace: str | None = None
    service_account: str | None = None
    cpu_request: str | None = None
    memory_request: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    env_config_maps: tuple[str, ...] = ()
    env_secrets: tuple[str, ...] = ()
    image_pull_policy: str | None = None
    startup_timeout_s: int = 600
    kubernetes_conn_id: str = "kubernetes_default"
    publish_events: bool = True

    def __post_init__(self) -> None:
        check_image(self.image)
        if self.namespace is not None:
            _check_dns("namespace", self.namespace, label=True)
        if self.service_account is not None:
            _check_dns("service_account", self.service_account, label=False)
        for kind in ("cpu", "memory"):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            requested = None if request is None else parse_quantity(f"{kind}_request", request)
            limited = None if limit is None else parse_quantity(f"{kind}_limit", limit)
            if requested is not None and limited is not None and requested > limited:
                raise ValueError(
                    f"{kind}_request {request!r} is more than {kind}_limit {limit!r}: Kubernetes refuses "
                    "such a pod; lower the request or raise the limit"
                )
        for field, names in (("env_config_maps", self.env_config_maps), ("env_secrets", self.env_secrets)):
            if not isinstance(names, tuple):
                raise ValueError(f"{field} must be a tuple of names, got {type(names).__name__}")
            for name in names:
                _check_dns(field, name, label=False)
            if len(set(names)) != len(names):
                raise ValueError(f"{field} names {list(names)} more than once")
        if self.image_pull_policy is not None and self.image_pull_policy not in PULL_POLICIES:
            raise ValueError(
                f"image_pull_policy {self.image_pull_policy!r} must be one of {', '.join(PULL_POLICIES)} "
                "(or unset for Kubernetes' default)"
            )
        _check_positive("startup_timeout_s", self.startup_timeout_s)
        if not isinstance(self.kubernetes_conn_id, str) or not VARIABLE_PATTERN.match(
            self.kubernetes_conn_id
        ):
            raise ValueError(
                f"kubernetes_conn_id {self.kubernetes_conn_id!r} must be an Airflow connection id "
                "(letters, digits, '_', '.', '-')"
            )
        if not isinstance(self.publish_events, bool):
            raise ValueError(f"publish_events must be true or false, got {self.publish_events!r}")

    def resources(self) -> dict[str, dict[str, str]]:
        """``{"requests": {...}, "limits": {...}}`` of the quantities set (an empty part is left out)."""
        parts = {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }
        found = {part: {k: v for k, v in values.items() if v is not None} for part, values in parts.items()}
        return {part: values for part, values in found.items() if values}


@dataclass(frozen=True)
class ScoringDagSpec:
    """One model version's scoring DAG: wait for the day's features, start a scoring run, follow it.

    Attributes:
        dag_id: from :func:`scoring_dag_id`.
        feature_set_version: the version as text ("3", "1.2.0").
        cron: five fields or a macro (``@daily``), read in ``timezone`` (an IANA name).
        start_date: the first day a run may fire (from local midnight); the caller picks it.
        doc_md: the model card summary (Markdown), shown on the DAG's page.
        api_url: the gateway's base URL, e.g. ``http://127.0.0.1:8080``.
        tags: added to ``pfactory``, ``scoring`` and the model's name.
        sensor_timeout_s / sensor_poke_s: how long and how often the two sensors look (reschedule mode).
        api_key_variable: the Airflow Variable holding the platform API key (else env ``PF_API_KEY``).
        paused_on_creation: whether Airflow creates the DAG paused.
        pod: score in a Kubernetes pod running the scorer image (task ``score``) instead of starting a
            scoring run through the API and following it; None: through the API.
    """

    dag_id: str
    model_name: str
    version: int
    feature_set_name: str
    feature_set_version: str
    cron: str
    timezone: str
    start_date: date
    owner: str
    doc_md: str
    api_url: str
    tags: tuple[str, ...] = ()
    retries: int = 2
    retry_delay_s: int = 300
    execution_timeout_s: int = 3600
    sensor_timeout_s: int = 6 * 3600
    sensor_poke_s: int = 300
    api_key_variable: str = "pf_api_key"
    paused_on_creation: bool = False
    pod: ScorerPod | None = None

    def __post_init__(self) -> None:
        _check_common(self, "scoring")
        if self.pod is not None and not isinstance(self.pod, ScorerPod):
            raise ValueError(f"pod must be a ScorerPod or None, got {type(self.pod).__name__}")
        _check_name("model_name", self.model_name)
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(
                f"version must be a positive integer (a registry version number), got {self.version!r}"
            )
        _check_positive("sensor_timeout_s", self.sensor_timeout_s)
        _check_positive("sensor_poke_s", self.sensor_poke_s)
        if self.sensor_poke_s > self.sensor_timeout_s:
            raise ValueError(
                f"sensor_poke_s ({self.sensor_poke_s}) is longer than sensor_timeout_s ({self.sensor_timeout_s}): "
                "the sensors would time out before their second look"
            )


@dataclass(frozen=True)
class MaterialisationDagSpec:
    """One feature-set version's materialisation DAG: start the day's job, follow it.

    Fields mean what they mean in :class:`ScoringDagSpec`; ``poke_s`` is the job sensor's interval.
    """

    dag_id: str
    feature_set_name: str
    feature_set_version: str
    cron: str
    timezone: str
    start_date: date
    owner: str
    doc_md: str
    api_url: str
    tags: tuple[str, ...] = ()
    retries: int = 2
    retry_delay_s: int = 300
    execution_timeout_s: int = 3600
    poke_s: int = 300
    sensor_timeout_s: int = 6 * 3600
    api_key_variable: str = "pf_api_key"
    paused_on_creation: bool = False

    def __post_init__(self) -> None:
        _check_common(self, "materialisation")
        _check_positive("poke_s", self.poke_s)
        _check_positive("sensor_timeout_s", self.sensor_timeout_s)
        if self.poke_s > self.sensor_timeout_s:
            raise ValueError(
                f"poke_s ({self.poke_s}) is longer than sensor_timeout_s ({self.sensor_timeout_s}): "
                "the sensor would time out before its second look"
            )


def scoring_dag_id(model_name: str, feature_set_name: str, feature_set_version: str, version: int) -> str:
    """The scoring DAG's id, e.g. ``pf_score__credit_default__credit_features_3__v4``.

    Args:
        model_name: the registered model's name.
        feature_set_name: its feature set's name.
        feature_set_version: the feature set's version as text ("3", "1.2.0").
        version: the registry version number.

    Returns:
        An id of ``[A-Za-z0-9_.-]``, at most 250 characters, always the same for the same inputs. When a
        name had to change to fit (other characters; ``_`` where it would make the id ambiguous; too long)
        a hash of the exact inputs is appended, so two different pairs never share an id.
    """
    model, name, fs_version = (_id_safe(part) for part in (model_name, feature_set_name, feature_set_version))
    dag_id = f"pf_score__{model}__{name}_{fs_version}__v{version}"
    exact = (
        _unambiguous(model_name, feature_set_name) and _id_safe(feature_set_version) == feature_set_version
    )
    return _fit(
        dag_id,
        exact and "_" not in feature_set_version,
        ["score", model_name, feature_set_name, feature_set_version, version],
    )


def materialisation_dag_id(feature_set_name: str, feature_set_version: str) -> str:
    """The materialisation DAG's id, e.g. ``pf_materialise__credit_features_3`` (same rules as scoring)."""
    name, fs_version = _id_safe(feature_set_name), _id_safe(feature_set_version)
    exact = _unambiguous(feature_set_name) and fs_version == feature_set_version and "_" not in fs_version
    return _fit(
        f"pf_materialise__{name}_{fs_version}", exact, ["materialise", feature_set_name, feature_set_version]
    )


def render_scoring_dag(spec: ScoringDagSpec) -> str:
    """The DAG file scoring ``spec``'s model version every time its cron fires.

    Args:
        spec: the validated spec (its constructor raised ``ValueError`` on bad fields).

    Returns:
        Python source text of an Airflow 3 DAG file with tasks ``wait_for_features`` (sensor),
        ``start_scoring`` and ``wait_for_scoring`` (sensor); with ``spec.pod``, ``wait_for_features`` and
        ``score`` (a ``KubernetesPodOperator`` running the scorer image's one-shot entrypoint).
    """
    tags = _tags(("pfactory", "scoring", spec.model_name, *spec.tags))
    constants = {
        **_common_constants(spec, check="scoring_dag", tags=tags),
        "MODEL_NAME": spec.model_name,
        "MODEL_VERSION": spec.version,
        "SENSOR_POKE_S": spec.sensor_poke_s,
        "SENSOR_TIMEOUT_S": spec.sensor_timeout_s,
        "IDEMPOTENCY_PREFIX": _idempotency_prefix(spec.dag_id),
    }
    if spec.pod is None:
        return _assemble(spec.dag_id, "scoring", constants, _FEATURES_SENSOR + _SCORING_TASKS)
    pod = spec.pod
    arguments = [
        f"--model={spec.model_name}",  # '=' keeps a name starting with '-' a value
        f"--feature-set={spec.feature_set_name}@{spec.feature_set_version}",
        f"--version={spec.version}",
        f"--termination-log={TERMINATION_LOG}",
    ]
    constants.update(
        {
            "SCORER_IMAGE": pod.image,
            "SCORER_COMMAND": list(SCORER_COMMAND),
            "SCORER_ARGUMENTS": arguments + (["--publish"] if pod.publish_events else []),
            "POD_NAMESPACE": pod.namespace,
            "POD_SERVICE_ACCOUNT": pod.service_account,
            "POD_RESOURCES": pod.resources() or None,
            "POD_ENV_CONFIG_MAPS": list(pod.env_config_maps),
            "POD_ENV_SECRETS": list(pod.env_secrets),
            "POD_IMAGE_PULL_POLICY": pod.image_pull_policy,
            "POD_STARTUP_TIMEOUT_S": pod.startup_timeout_s,
            "KUBERNETES_CONN_ID": pod.kubernetes_conn_id,
        }
    )
    return _assemble(
        spec.dag_id, "scoring", constants, _FEATURES_SENSOR + _SCORING_POD_TASKS, _IMPORTS + _POD_IMPORTS
    )


def render_materialisation_dag(spec: MaterialisationDagSpec) -> str:
    """The DAG file materialising ``spec``'s feature-set version's day every time its cron fires.

    Args:
        spec: the validated spec.

    Returns:
        Python source text of an Airflow 3 DAG file with tasks ``start_materialisation`` and
        ``wait_for_materialisation`` (sensor).
    """
    tags = _tags(("pfactory", "materialisation", spec.feature_set_name, *spec.tags))
    constants = {
        **_common_constants(spec, check="materialisation_dag", tags=tags),
        "MODEL_NAME": None,
        "SENSOR_POKE_S": spec.poke_s,
        "SENSOR_TIMEOUT_S": spec.sensor_timeout_s,
        "IDEMPOTENCY_PREFIX": _idempotency_prefix(spec.dag_id),
    }
    return _assemble(spec.dag_id, "materialisation", constants, _MATERIALISATION_TASKS)


# --- validation ----------------------------------------------------------------------------------------


def _check_common(spec: ScoringDagSpec | MaterialisationDagSpec, kind: str) -> None:
    if not isinstance(spec.dag_id, str) or not DAG_ID_PATTERN.match(spec.dag_id):
        raise ValueError(
            f"dag_id {spec.dag_id!r} must be 1-{DAG_ID_MAX} characters of letters, digits, '_', '.', '-' "
            f"(use {kind}_dag_id(...) to derive one)"
        )
    _check_name("feature_set_name", spec.feature_set_name)
    _check_name("feature_set_version", spec.feature_set_version)
    normalise_cron(spec.cron)
    try:
        ZoneInfo(spec.timezone)
    except (ValueError, KeyError, OSError) as error:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(
            f"timezone {spec.timezone!r} is not an IANA time zone name (e.g. 'Europe/London', "
            f"'America/New_York', 'UTC'): {error}"
        ) from None
    if isinstance(spec.start_date, datetime) or not isinstance(spec.start_date, date):
        raise ValueError(
            f"start_date must be a date (the day the DAG goes live; it starts at local midnight), "
            f"got {spec.start_date!r}"
        )
    _check_text("owner", spec.owner, empty_ok=False)
    _check_text("doc_md", spec.doc_md, empty_ok=True)
    _check_api_url(spec.api_url)
    for tag in spec.tags:
        if not isinstance(tag, str) or not tag or len(tag) > TAG_MAX or "\x00" in tag:
            raise ValueError(f"tag {tag!r} must be a non-empty string of at most {TAG_MAX} characters")
    if isinstance(spec.retries, bool) or not isinstance(spec.retries, int) or spec.retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {spec.retries!r}")
    if (
        isinstance(spec.retry_delay_s, bool)
        or not isinstance(spec.retry_delay_s, int)
        or spec.retry_delay_s < 0
    ):
        raise ValueError(
            f"retry_delay_s must be an integer number of seconds >= 0, got {spec.retry_delay_s!r}"
        )
    _check_positive("execution_timeout_s", spec.execution_timeout_s)
    if not isinstance(spec.api_key_variable, str) or not VARIABLE_PATTERN.match(spec.api_key_variable):
        raise ValueError(
            f"api_key_variable {spec.api_key_variable!r} must be an Airflow Variable name "
            "(letters, digits, '_', '.', '-')"
        )


def check_image(image: object) -> None:
    """Refuse what is not an image reference with a tag or digest (``registry/path:tag``, ``path@sha256:...``).

    Raises:
        ValueError: what is wrong and an example of a valid reference.
    """
    example = "e.g. 'registry.example.com/pfactory/scorer:1.4.2' or 'pfactory/scorer@sha256:<64 hex>'"
    if not isinstance(image, str):
        raise ValueError(f"the scorer image must be a string, got {type(image).__name__}")
    found = _IMAGE.fullmatch(image)
    if found is None:
        raise ValueError(
            f"the scorer image {image!r} is not an image reference ([registry[:port]/]path[:tag][@digest], "
            f"path in lower case, no spaces or schemes), {example}"
        )
    if len(found["name"]) > IMAGE_NAME_MAX:
        raise ValueError(f"the scorer image's name is longer than {IMAGE_NAME_MAX} characters: {image!r}")
    if found["tag"] is None and found["digest"] is None:
        raise ValueError(
            f"the scorer image {image!r} names no tag or digest: name one, {example}, so every run of a "
            "version uses the same scorer (an implicit 'latest' changes under it)"
        )


def parse_quantity(field: str, quantity: object) -> Decimal:
    """The value of a Kubernetes resource quantity (``500m`` -> 0.5, ``1Gi`` -> 1073741824).

    Raises:
        ValueError: not a positive quantity Kubernetes accepts.
    """
    found = _QUANTITY.fullmatch(quantity) if isinstance(quantity, str) else None
    if found is None:
        raise ValueError(
            f"{field} {quantity!r} is not a Kubernetes quantity: a number with an optional suffix, "
            "e.g. '500m' or '2' (CPUs), '512Mi' or '4Gi' (memory)"
        )
    suffix = found["suffix"] or ""
    value = Decimal(found["number"]) * (
        Decimal(10) ** int(suffix[1:])
        if suffix[:1] in ("e", "E") and len(suffix) > 1
        else _SUFFIX_SCALE[suffix]
    )
    if value <= 0:
        raise ValueError(f"{field} {quantity!r} must be more than zero (leave it unset for none)")
    return value


def _check_dns(field: str, value: object, *, label: bool) -> None:
    pattern, most, what = (
        (_DNS_LABEL, DNS_LABEL_MAX, "a DNS label")
        if label
        else (_DNS_SUBDOMAIN, DNS_SUBDOMAIN_MAX, "a DNS subdomain")
    )
    if not isinstance(value, str) or len(value) > most or not pattern.fullmatch(value):
        raise ValueError(
            f"{field} {value!r} is not a Kubernetes name: {what} of at most {most} characters "
            "(lower-case letters, digits and '-'"
            + ("" if label else ", dot-separated")
            + ", starting and ending "
            "with a letter or digit)"
        )


def _check_positive(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{field} must be a positive integer number of seconds, got {value!r}")


def _check_text(field: str, value: object, *, empty_ok: bool) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise ValueError(f"{field} must not be empty")
    if "\x00" in value:
        raise ValueError(f"{field} holds a NUL character, which Airflow's metadata database cannot store")


def _check_name(field: str, value: object) -> None:
    _check_text(field, value, empty_ok=False)
    assert isinstance(value, str)
    if any(ch in value for ch in "/\\") or value != value.strip() or not value.isprintable():
        raise ValueError(
            f"{field} {value!r} must be a printable name without '/', '\\' or surrounding spaces "
            "(it is a path segment of the gateway's API)"
        )


def _check_api_url(url: object) -> None:
    if not isinstance(url, str):
        raise ValueError(f"api_url must be a string, got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"api_url {url!r} must be the gateway's http(s) base URL, e.g. 'http://127.0.0.1:8080'"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(
            f"api_url {url!r} must hold no query, fragment or credentials "
            "(the API key comes from an Airflow Variable)"
        )


def normalise_cron(cron: str) -> str:
    """The five-field form of ``cron`` (macros such as ``@daily`` expanded), read by the platform's one cron
    parser (:mod:`pfactory.contracts.cron`), so a DAG runs only what config validation accepted.

    Raises:
        ValueError: what is wrong with the expression (a ``CronError``).
    """
    if not isinstance(cron, str):
        raise ValueError(f"cron must be a string, got {type(cron).__name__}")
    expression = " ".join(cron.split())
    parse_cron(expression)  # raises CronError (a ValueError) with advice
    return MACROS.get(expression.lower(), expression)


# --- rendering -----------------------------------------------------------------------------------------


def _id_safe(text: str) -> str:
    return _UNSAFE_ID_CHARS.sub("_", str(text))


def _unambiguous(*names: str) -> bool:
    """True when the names enter a ``__``-separated id unchanged and cannot shift a separator."""
    return all(
        _id_safe(name) == name and "__" not in name and not name.startswith("_") and not name.endswith("_")
        for name in names
    )


def _fit(dag_id: str, exact: bool, inputs: list[Any]) -> str:
    if exact and len(dag_id) <= DAG_ID_MAX:
        return dag_id
    digest = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:12]
    return f"{dag_id[: DAG_ID_MAX - len(digest) - 2]}__{digest}"


def _idempotency_prefix(dag_id: str) -> str:
    """The Idempotency-Key stem: the dag id when it fits the gateway's pattern, else a short stable form."""
    if len(dag_id) <= IDEMPOTENCY_PREFIX_MAX and dag_id[0].isalnum():
        return dag_id
    digest = hashlib.sha256(dag_id.encode()).hexdigest()[:16]
    return f"pf-{dag_id[: IDEMPOTENCY_PREFIX_MAX - len(digest) - 4].lstrip('_.-')}-{digest}"


def _alert_dedup_key(dag_id: str) -> str:
    """``airflow:<dag_id>``, shortened with a hash to the 200 characters the alerts API accepts."""
    key = f"airflow:{dag_id}"
    if len(key) <= ALERT_KEY_MAX:
        return key
    digest = hashlib.sha256(dag_id.encode()).hexdigest()[:16]
    return f"{key[: ALERT_KEY_MAX - len(digest) - 1]}-{digest}"


def _tags(tags: tuple[str, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in tags:
        seen.setdefault(tag[:TAG_MAX], None)
    return list(seen)


def _doc_md(doc_md: str) -> str:
    # Airflow reads a doc_md ending in ".md" as a path and embeds that file: a trailing newline keeps
    # the card a card (Markdown renders it the same).
    return doc_md + "\n" if doc_md.endswith(".md") else doc_md


def _common_constants(
    spec: ScoringDagSpec | MaterialisationDagSpec, *, check: str, tags: list[str]
) -> dict[str, Any]:
    return {
        "DAG_ID": spec.dag_id,
        "ALERT_DEDUP_KEY": _alert_dedup_key(spec.dag_id),
        "CHECK": check,
        "FEATURE_SET_NAME": spec.feature_set_name,
        "FEATURE_SET_VERSION": spec.feature_set_version,
        "CRON": normalise_cron(spec.cron),
        "TIMEZONE": spec.timezone,
        "START_DATE": (spec.start_date.year, spec.start_date.month, spec.start_date.day),
        "OWNER": spec.owner,
        "TAGS": tags,
        "API_URL": spec.api_url.rstrip("/"),
        "API_KEY_VARIABLE": spec.api_key_variable,
        "RETRIES": spec.retries,
        "RETRY_DELAY_S": spec.retry_delay_s,
        "EXECUTION_TIMEOUT_S": spec.execution_timeout_s,
        "PAUSED_ON_CREATION": spec.paused_on_creation,
        "DOC_MD": _doc_md(spec.doc_md),
    }


def _literal(value: Any) -> str:
    """``repr`` of a constant; a long multi-line string is split into one literal per line."""
    if isinstance(value, str) and "\n" in value and len(value) > 80:
        lines = value.splitlines(keepends=True)
        return "(\n" + "".join(f"    {line!r}\n" for line in lines) + ")"
    return repr(value)


def _assemble(
    dag_id: str, kind: str, constants: dict[str, Any], tasks: str, imports: str | None = None
) -> str:
    assignments = "".join(f"{name} = {_literal(value)}\n" for name, value in constants.items())
    header = (
        f"# Generated by Prediction Factory (pfactory.scheduler.dags): the {kind} DAG {dag_id!r}.\n"
        "# Do not edit: the scheduler rewrites this file. Values are literals; the code below reads them.\n"
    )
    return header + (imports or _IMPORTS) + "\n" + assignments + _RUNTIME + tasks


_IMPORTS = """from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, CronTriggerTimetable, Variable
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.log import mask_secret

with warnings.catch_warnings():
    # providers-standard 1.21 imports airflow.utils.operator_helpers.determine_kwargs, which Airflow 3.3
    # deprecates: without this filter every parse of this file records a DeprecatedImportWarning.
    warnings.filterwarnings("ignore", message=".*operator_helpers.determine_kwargs", category=FutureWarning)
    from airflow.providers.standard.sensors.python import PythonSensor

"""

# Fixed task code shared by both DAG kinds; it reads only the constants above it.
_RUNTIME = '''
HTTP_TIMEOUT_S = 30
MAX_NEW_RUNS = 20  # a cleared DAG run starts a new scoring run when the earlier one failed (key suffix -rN)
log = logging.getLogger("pfactory.dag." + DAG_ID)


def _ds(context):
    """The run's day in the DAG's zone (Airflow's {{ ds }} is the UTC date of the logical date)."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return pendulum.instance(when).in_timezone(TIMEZONE).date().isoformat()


def _api_key():
    key = Variable.get(API_KEY_VARIABLE, default=None)
    if not key:
        key = os.environ.get("PF_API_KEY")
        if key:
            mask_secret(key, name="PF_API_KEY")
    if not key:
        raise AirflowFailException(
            "no platform API key: set the Airflow Variable " + repr(API_KEY_VARIABLE)
            + " (or PF_API_KEY in the workers' environment) to a key with the submit and read scopes"
        )
    return key


def _quote(text):
    return urllib.parse.quote(str(text), safe="")


def _call(method, path, body=None, headers=None):
    """One gateway request; returns (status, JSON document or {}, body text)."""
    url = API_URL + path
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    request.add_header("Authorization", "Bearer " + _api_key())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        raise RuntimeError(
            method + " " + url + " could not reach the platform gateway (" + str(getattr(error, "reason", error))
            + "); check that it runs and that API_URL in this DAG file is right"
        ) from error
    text = raw.decode("utf-8", errors="replace")
    try:
        document = json.loads(text) if text else {}
    except ValueError:
        document = {}
    return status, document if isinstance(document, dict) else {}, text


def _refused(method, path, status, text, doing):
    """An answer the task cannot use: 4xx (but 408/429) fail without retries, the rest retry."""
    message = (
        doing + ": " + method + " " + API_URL + path + " answered " + str(status) + ": " + text[:500].strip()
    )
    if 400 <= status < 500 and status not in (408, 429):
        if status in (401, 403):
            message += " (check the API key in the Airflow Variable " + repr(API_KEY_VARIABLE) + " and its scopes)"
        return AirflowFailException(message)
    return RuntimeError(message)


def _on_failure(context):
    """Raise a platform alert for the failed task; never raises itself (the failure is logged)."""
    try:
        ti = context.get("ti") or context.get("task_instance")
        task_id = getattr(ti, "task_id", "?")
        try:
            ds = _ds(context)
        except Exception:
            ds = "an unknown day"
        links = {}
        try:
            if ti is not None and ti.log_url:
                links["airflow_log"] = ti.log_url
        except Exception:
            pass
        cause = str(context.get("exception") or "")[:400]
        summary = DAG_ID + ": task " + task_id + " failed for " + ds + (": " + cause if cause else "")
        alert = {
            "dedup_key": ALERT_DEDUP_KEY,
            "check": CHECK,
            "severity": "error",
            "summary": summary[:1024],
            "feature_set_name": FEATURE_SET_NAME[:200],
            "links": links,
            "details": {
                "dag_id": DAG_ID,
                "task_id": task_id,
                "ds": ds,
                "run_id": str(getattr(ti, "run_id", "")),
                "try_number": getattr(ti, "try_number", None),
                "feature_set_version": FEATURE_SET_VERSION,
            },
        }
        if MODEL_NAME is not None:
            alert["model_name"] = MODEL_NAME[:200]
            alert["details"]["model_version"] = MODEL_VERSION
        status, _, text = _call("POST", "/v1/alerts", alert)
        if status >= 300:
            log.error("the failure alert was refused: POST %s/v1/alerts answered %s: %s", API_URL, status, text[:500])
    except Exception:
        log.exception("could not send the failure alert for %s to %s/v1/alerts", DAG_ID, API_URL)


def _follow_job(path, what, ds):
    """Poke a job (scoring run or materialisation): True once succeeded; a failure fails the task."""
    status, document, text = _call("GET", path)
    if status != 200:
        raise _refused("GET", path, status, text, "following " + what)
    state = document.get("status")
    if state == "succeeded":
        log.info("%s for %s succeeded: %s", what, ds, json.dumps(document.get("result") or {})[:1000])
        return True
    if state == "failed":
        raise AirflowFailException(
            what + " for " + ds + " failed: " + str(document.get("reason") or "no reason given")
            + " (details: GET " + API_URL + path + ")"
        )
    log.info("%s for %s is %s (stage %r, progress %s)", what, ds, state, document.get("stage"), document.get("progress"))
    return False


DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": RETRIES,
    "retry_delay": timedelta(seconds=RETRY_DELAY_S),
    "execution_timeout": timedelta(seconds=EXECUTION_TIMEOUT_S),
    "on_failure_callback": _on_failure,
}

def _dag():
    """The DAG with the schedule, defaults and documentation above."""
    return DAG(
        dag_id=DAG_ID,
        schedule=CronTriggerTimetable(CRON, timezone=TIMEZONE),
        start_date=pendulum.datetime(*START_DATE, tz=TIMEZONE),
        catchup=False,
        max_active_runs=1,
        tags=TAGS,
        default_args=DEFAULT_ARGS,
        doc_md=DOC_MD,
        is_paused_upon_creation=PAUSED_ON_CREATION,
    )


def _start_once(path, body, id_field, ds, what, listing):
    """POST ``body`` under the day's Idempotency-Key and return the started (or found) id.

    The same key on a retry returns what the first attempt started instead of starting another; a
    found one that failed (the run was cleared to try again) moves on to the key's next -rN.
    """
    for attempt in range(MAX_NEW_RUNS):
        key = IDEMPOTENCY_PREFIX + "-" + ds + ("-r" + str(attempt) if attempt else "")
        status, document, text = _call("POST", path, body, {"Idempotency-Key": key})
        if status not in (200, 202) or id_field not in document:
            raise _refused("POST", path, status, text, "starting the " + what + " of " + ds)
        if document.get("replayed") and document.get("status") == "failed":
            log.info("%s %s (key %s) failed earlier; starting a new one", what, document[id_field], key)
            continue
        log.info("%s %s for %s (key %s, replayed=%s)", what, document[id_field], ds, key, document.get("replayed"))
        return document[id_field]
    raise AirflowFailException(
        str(MAX_NEW_RUNS) + " attempts at the " + what + " of " + DAG_ID + " for " + ds + " failed; see GET "
        + API_URL + listing
    )
'''

_FEATURES_SENSOR = '''

def wait_for_features(**context):
    """True once the day's feature partition is good; a missing or failed day is waited for."""
    ds = _ds(context)
    path = (
        "/v1/feature-sets/" + _quote(FEATURE_SET_NAME) + "/versions/" + _quote(FEATURE_SET_VERSION)
        + "/partitions/" + ds
    )
    status, document, text = _call("GET", path)
    if status == 404 and document.get("code", "partition_not_found") == "partition_not_found":
        log.info("the features of %s@%s for %s are not materialised yet", FEATURE_SET_NAME, FEATURE_SET_VERSION, ds)
        return False
    if status != 200:
        raise _refused("GET", path, status, text, "looking for the features of " + ds)
    day = document.get("status")
    if day == "good":
        return True
    # A failed day may still be re-materialised (the materialisation DAG retries and alerts on its own).
    log.warning("the features of %s@%s for %s are %s: %s", FEATURE_SET_NAME, FEATURE_SET_VERSION, ds, day, document.get("note"))
    return False


def features_sensor():
    """The first task of a scoring DAG: wait (rescheduled, not holding a slot) for the day's good partition."""
    return PythonSensor(
        task_id="wait_for_features",
        python_callable=wait_for_features,
        mode="reschedule",
        poke_interval=SENSOR_POKE_S,
        timeout=SENSOR_TIMEOUT_S,
    )
'''

_SCORING_TASKS = '''

def start_scoring(**context):
    """Start (or find) the day's scoring run; returns its run id (XCom)."""
    ds = _ds(context)
    body = {
        "model": MODEL_NAME,
        "version": MODEL_VERSION,
        "feature_set": FEATURE_SET_NAME + "@" + FEATURE_SET_VERSION,
        "ds": ds,
    }
    return _start_once(
        "/v1/scoring-runs", body, "run_id", ds, "scoring run", "/v1/scoring-runs?model=" + _quote(MODEL_NAME)
    )


def wait_for_scoring(**context):
    """True once the scoring run succeeded; a failed run fails the task with the run's reason."""
    run_id = context["ti"].xcom_pull(task_ids="start_scoring")
    ds = _ds(context)
    return _follow_job("/v1/scoring-runs/" + _quote(run_id), "scoring run " + str(run_id), ds)


with _dag() as dag:
    features = features_sensor()
    start = PythonOperator(task_id="start_scoring", python_callable=start_scoring)
    scored = PythonSensor(
        task_id="wait_for_scoring",
        python_callable=wait_for_scoring,
        mode="reschedule",
        poke_interval=SENSOR_POKE_S,
        timeout=SENSOR_TIMEOUT_S,
    )
    features >> start >> scored
'''

_MATERIALISATION_TASKS = '''

def start_materialisation(**context):
    """Start (or find) the materialisation of the day's partition; returns the job id (XCom)."""
    ds = _ds(context)
    path = "/v1/feature-sets/" + _quote(FEATURE_SET_NAME) + "/versions/" + _quote(FEATURE_SET_VERSION) + "/materialisations"
    return _start_once(path, {"start_ds": ds, "end_ds": ds}, "job_id", ds, "materialisation job", "/v1/jobs")


def wait_for_materialisation(**context):
    """True once the job succeeded; a failed job fails the task with its reason."""
    job_id = context["ti"].xcom_pull(task_ids="start_materialisation")
    ds = _ds(context)
    return _follow_job("/v1/jobs/" + _quote(job_id), "materialisation job " + str(job_id), ds)


with _dag() as dag:
    start = PythonOperator(task_id="start_materialisation", python_callable=start_materialisation)
    materialised = PythonSensor(
        task_id="wait_for_materialisation",
        python_callable=wait_for_materialisation,
        mode="reschedule",
        poke_interval=SENSOR_POKE_S,
        timeout=SENSOR_TIMEOUT_S,
    )
    start >> materialised
'''

_POD_IMPORTS = """from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

"""

_SCORING_POD_TASKS = '''

class ScoringPod(KubernetesPodOperator):
    """The scorer image's one-shot entrypoint in a pod, scoring the run's day (in the DAG's zone).

    No field is a template: the model's name reaches the pod's arguments as data, never as Jinja. The
    day and the job id are added when the pod is built for a run; the job id (the day and the try) keys
    the events the pod publishes, so a pod run again within one try republishes the same event ids.
    """

    template_fields = ()

    def build_pod_request_obj(self, context=None, *, dry_run=False):
        if context is not None:
            ds = _ds(context)
            attempt = getattr(context.get("ti"), "try_number", None) or 1
            job_id = IDEMPOTENCY_PREFIX + "-" + ds + "-t" + str(attempt)
            self.arguments = [*SCORER_ARGUMENTS, "--ds=" + ds, "--job-id=" + job_id]
        return super().build_pod_request_obj(context, dry_run=dry_run)


env_from = [
    k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=name)) for name in POD_ENV_CONFIG_MAPS
] + [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=name)) for name in POD_ENV_SECRETS]

with _dag() as dag:
    features = features_sensor()
    scored = ScoringPod(
        task_id="score",
        name="pfactory-score",
        kubernetes_conn_id=KUBERNETES_CONN_ID,
        namespace=POD_NAMESPACE,
        service_account_name=POD_SERVICE_ACCOUNT,
        image=SCORER_IMAGE,
        image_pull_policy=POD_IMAGE_PULL_POLICY,
        cmds=SCORER_COMMAND,
        arguments=SCORER_ARGUMENTS,
        env_from=env_from,
        container_resources=k8s.V1ResourceRequirements(**POD_RESOURCES) if POD_RESOURCES else None,
        labels={"app.kubernetes.io/name": "pfactory-scorer", "app.kubernetes.io/part-of": "pfactory"},
        startup_timeout_seconds=POD_STARTUP_TIMEOUT_S,
        active_deadline_seconds=EXECUTION_TIMEOUT_S,  # Kubernetes stops the pod even if the worker is gone
        get_logs=True,
        on_finish_action="delete_pod",
    )
    features >> scored
'''
