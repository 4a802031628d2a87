"""``KubernetesPodLauncher``: one pod per run, created, watched to the end, its logs kept, then deleted.

The pod is :func:`~pfactory.trainer.manifest.build_pod_manifest`'s. Its name is fixed by (job, run),
so a redelivered job finds the pod of its earlier delivery (``409 AlreadyExists``) and follows that
one rather than starting a second. The run's limits are the cluster's to enforce: the kubelet kills
the container at its memory limit (``OOMKilled``) and the pod at ``activeDeadlineSeconds``
(``DeadlineExceeded``); the launcher turns those into the same reasons the process backend gives.
Exit statuses above 128 are read as 128 + the signal that ended the container, as runtimes report them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from pfactory.contracts.configs import Resources
from pfactory.trainer import runfiles
from pfactory.trainer.jobspec import RESULT_FILE, RunSpec
from pfactory.trainer.launcher import (
    LOG_TAIL_LINES,
    RunOutcome,
    judge_exit,
    memory_limit_reason,
    tail_logs,
    time_limit_reason,
)
from pfactory.trainer.manifest import KubernetesSettings, build_pod_manifest, pod_name

_TERMINAL = ("Succeeded", "Failed")


class KubernetesPodLauncher:
    """Runs each training run as a pod through the Kubernetes API (kubernetes-asyncio)."""

    def __init__(self, settings: KubernetesSettings) -> None:
        """Keep the settings; the API client is made on the first run, inside the event loop."""
        self._settings = settings
        self._api: Any = None
        self._api_lock = asyncio.Lock()

    async def run(self, spec: RunSpec, *, resources: Resources, model_name: str) -> RunOutcome:
        """Run ``spec`` in a pod with ``resources`` as its requests and limits; see :class:`PodLauncher`."""
        started = time.monotonic()
        settings = self._settings
        endpoint, region = spec.feature_store.endpoint_url, spec.feature_store.region
        core = client.CoreV1Api(await self._client())
        name = pod_name(spec.job_id, spec.run_id)
        delete = settings.delete_finished_pods
        try:
            if not await self._exists(core, name):  # not adopted: an earlier attempt's result is stale
                await asyncio.to_thread(
                    runfiles.remove, spec.output_uri, RESULT_FILE, endpoint_url=endpoint, region=region
                )
            spec_uri = await asyncio.to_thread(
                runfiles.write_spec, spec, endpoint_url=endpoint, region=region
            )
            manifest = build_pod_manifest(
                spec_uri=spec_uri,
                job_id=spec.job_id,
                run_id=spec.run_id,
                model_name=model_name,
                resources=resources,
                settings=settings,
                storage_endpoint_url=endpoint,
            )
            refused = await self._create(core, manifest)
            if refused:
                return RunOutcome(False, None, refused, time.monotonic() - started, "")
            pod, stopped = await self._follow(core, name, resources)
            logs = await self._logs(core, name)
            delete = delete or stopped is not None  # a pod given up on must not linger
        except BaseException:  # cancelled, or the API failed: the pod must not run on unwatched
            delete = True
            raise
        finally:
            if delete:
                await asyncio.shield(self._delete(core, name))
        result, problem = await asyncio.to_thread(
            runfiles.collect_result, spec.output_uri, endpoint_url=endpoint, region=region
        )
        exit_code, reason = _verdict(pod, resources)
        ok = False
        if stopped:
            reason = stopped
        elif reason is None:
            ok, reason = judge_exit(exit_code if exit_code is not None else 0, result, problem, logs)
        return RunOutcome(ok, exit_code, reason, time.monotonic() - started, logs, None, result)

    async def _client(self) -> Any:
        async with self._api_lock:
            if self._api is None:
                configuration = client.Configuration()
                if self._settings.api_host:
                    configuration.host = self._settings.api_host
                else:
                    try:
                        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                    except config.ConfigException:
                        await config.load_kube_config(client_configuration=configuration)
                configuration.verify_ssl = self._settings.verify_ssl
                self._api = client.ApiClient(configuration)
            return self._api

    async def _exists(self, core: Any, name: str) -> bool:
        try:
            await core.read_namespaced_pod(name, self._settings.namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def _create(self, core: Any, manifest: dict[str, Any]) -> str | None:
        """Create the pod; None when it runs (created now or by an earlier delivery), else why not."""
        try:
            await core.create_namespaced_pod(self._settings.namespace, manifest)
        except ApiException as error:
            if error.status == 409:  # this (job, run)'s pod exists from an earlier delivery: follow it
                return None
            if error.status is not None and 400 <= error.status < 500:
                return (
                    f"the Kubernetes API refused the run's pod ({error.status} {error.reason}): "
                    f"{_message(error)}; check the namespace's quota and the trainer's Kubernetes settings"
                )
            raise
        return None

    async def _follow(self, core: Any, name: str, resources: Resources) -> tuple[dict[str, Any], str | None]:
        """Watch the pod to a terminal phase; returns the last pod seen and, when it was given up on, why."""
        settings = self._settings
        pending_until = time.monotonic() + settings.pending_timeout_seconds
        running_until: float | None = None
        pod: dict[str, Any] = {}
        while True:
            until = running_until if running_until is not None else pending_until
            remaining = until - time.monotonic()
            if remaining <= 0:
                if running_until is None:
                    return pod, _pending_reason(pod, settings.pending_timeout_seconds)
                return pod, time_limit_reason(resources.timeout_seconds)
            window = max(1, math.ceil(min(settings.watch_timeout_seconds, remaining)))
            # a watch without a resourceVersion starts with the pod's current state (a synthetic ADDED)
            with contextlib.suppress(TimeoutError):
                async with watch.Watch() as pods, asyncio.timeout(window + 30):  # if the server never ends it
                    stream = pods.stream(
                        core.list_namespaced_pod,
                        namespace=settings.namespace,
                        field_selector=f"metadata.name={name}",
                        timeout_seconds=window,
                    )
                    async for event in stream:
                        pod = event["raw_object"]
                        if event["type"] == "DELETED":
                            return (
                                pod,
                                "the run's pod was deleted before it finished (evicted, or by someone)",
                            )
                        phase = pod.get("status", {}).get("phase")
                        if phase in _TERMINAL:
                            return pod, None
                        if phase != "Pending" and running_until is None:
                            grace = resources.timeout_seconds + settings.deadline_grace_seconds
                            running_until = time.monotonic() + grace
                            break  # re-watch against the running deadline

    async def _logs(self, core: Any, name: str) -> str:
        try:
            text = await core.read_namespaced_pod_log(
                name,
                self._settings.namespace,
                container="run",
                tail_lines=LOG_TAIL_LINES,
                limit_bytes=200_000,
            )
        except ApiException as error:
            return f"(the run's log could not be read: {error.status} {_message(error)})"
        return tail_logs(str(text))

    async def _delete(self, core: Any, name: str) -> None:
        with contextlib.suppress(ApiException):  # 404: already gone
            await core.delete_namespaced_pod(name, self._settings.namespace, propagation_policy="Background")

    async def aclose(self) -> None:
        """Close the API client (pods of runs still being followed are deleted by their cancellation)."""
        if self._api is not None:
            await self._api.close()
            self._api = None


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return next((status for status in statuses if status.get("name") == "run"), statuses[0])


def _verdict(pod: dict[str, Any], resources: Resources) -> tuple[int | None, str | None]:
    """The exit status of a finished pod and, when the cluster stopped it, the reason why."""
    status = pod.get("status", {})
    terminated = _container(pod).get("state", {}).get("terminated") or {}
    exit_code = terminated.get("exitCode")
    if isinstance(exit_code, int) and 128 < exit_code <= 128 + 64:
        exit_code = -(exit_code - 128)
    if status.get("reason") == "DeadlineExceeded":
        return exit_code, time_limit_reason(resources.timeout_seconds)
    if terminated.get("reason") == "OOMKilled":
        return exit_code, memory_limit_reason(resources.memory, None)
    if status.get("reason") == "Evicted":
        return exit_code, f"the run's pod was evicted: {status.get('message', 'no message')}"
    if status.get("phase") == "Failed" and exit_code is None:
        return None, f"the run's pod failed before its container ran: {status.get('message', 'no message')}"
    return exit_code, None


def _pending_reason(pod: dict[str, Any], seconds: int) -> str:
    waiting = _container(pod).get("state", {}).get("waiting") or {}
    conditions = pod.get("status", {}).get("conditions") or []
    unscheduled: dict[str, Any] = next(
        (c for c in conditions if c.get("type") == "PodScheduled" and c.get("status") == "False"), {}
    )
    detail = (
        f"{waiting.get('reason')}: {waiting.get('message', '')}".strip(": ")
        if waiting.get("reason")
        else unscheduled.get("message") or "no reason reported"
    )
    return (
        f"the run's pod did not start within {seconds} s ({detail}); check the image and that a node has "
        "room for spec.resources"
    )


def _message(error: ApiException) -> str:
    """The message of the API's Status answer, else the HTTP reason."""
    try:
        return str(json.loads(error.body or b"")["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.reason)
