"""A small HTTP client for the gateway's jobs and registry APIs, turning failures into advice."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pfactory.cli.credentials import CredentialsError, read_credentials
from pfactory.cli.stack import read_stack_state

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
"""Where the gateway listens when started with its defaults (``PF_GATEWAY_PORT`` = 8080)."""


class GatewayError(RuntimeError):
    """The gateway could not be used; the message says what to do about it."""

    exit_code = 3


class GatewayUnreachable(GatewayError):
    """Nothing answered at the gateway URL."""


class GatewayAuthError(GatewayError):
    """The gateway refused the API key (401) or its scope (403)."""


class JobNotFound(GatewayError):
    """The gateway knows no job with that id."""

    exit_code = 1


class RegistryRefused(GatewayError):
    """The registry answered 404, 409 or 422: no such model/version/alias, or a refused change."""

    exit_code = 1

    def __init__(self, message: str, *, status_code: int, code: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.body = body


@dataclass
class ConfigRejected(Exception):
    """The gateway answered 422: the config is invalid; ``issues`` are dicts shaped like ConfigIssue."""

    summary: str
    issues: list[dict[str, Any]]


def resolve_gateway_url(url: str | None, home: Path) -> str:
    """``--url``, else ``PF_GATEWAY_URL``, else the running local stack's gateway, else the default."""
    if url:
        return url.rstrip("/")
    if env := os.environ.get("PF_GATEWAY_URL"):
        return env.rstrip("/")
    state = read_stack_state(home)
    if state and isinstance(state.get("gateway_url"), str):
        return str(state["gateway_url"]).rstrip("/")
    return DEFAULT_GATEWAY_URL


def resolve_api_key(api_key: str | None, home: Path) -> str | None:
    """``--api-key``, else ``PF_API_KEY``, else the local stack's ``credentials.json`` (or None)."""
    if api_key:
        return api_key
    if env := os.environ.get("PF_API_KEY"):
        return env
    try:
        stored = read_credentials(home)
    except CredentialsError as error:
        raise GatewayAuthError(str(error)) from error
    return stored.api_key if stored else None


class GatewayClient:
    """Calls the gateway's ``/v1/jobs`` API.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080``.
        api_key: sent as ``Authorization: Bearer <key>``; None sends no header.
        timeout_s: per-request timeout.
    """

    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._has_key = api_key is not None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def submit(
        self, config_yaml: str, filename: str, *, start_ds: str | None = None, end_ds: str | None = None
    ) -> dict[str, Any]:
        """POST a config; return the 202 body (``job_id``, ``kind``, ``name``, ``status``, ``location``).

        Args:
            config_yaml: the config's YAML text (issues come back with line and column).
            filename: reported in issues.
            start_ds: FeatureSet only: first day to materialise.
            end_ds: FeatureSet only: last day to materialise.

        Raises:
            ConfigRejected: 422, the config is invalid.
            GatewayError: anything else that is not a 2xx.
        """
        body: dict[str, Any] = {"config_yaml": config_yaml, "filename": filename}
        body.update({k: v for k, v in {"start_ds": start_ds, "end_ds": end_ds}.items() if v})
        response = self._request("POST", "/v1/jobs", json=body)
        if response.status_code == 422:
            raise _config_rejected(response)
        return self._json(response)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """GET one job's current view."""
        response = self._request("GET", f"/v1/jobs/{job_id}")
        if response.status_code == 404:
            raise JobNotFound(f"no job {job_id!r} at {self.base_url}; list them with `pfactory jobs list`")
        return self._json(response)

    def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """GET a page of jobs, newest first: ``{"data": [...], "count": n, "next_cursor": ...}``."""
        params = {
            k: v
            for k, v in {"status": status, "kind": kind, "limit": limit, "cursor": cursor}.items()
            if v is not None
        }
        return self._json(self._request("GET", "/v1/jobs", params=params))

    # ------------------------------------------------------------------ registry

    def list_models(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """GET a page of models: ``{"data": [{"name", "pairs": [...]}], "count", "next_cursor"}``."""
        return self._registry_json(
            self._request("GET", "/v1/models", params=_params(limit=limit, cursor=cursor))
        )

    def get_model(self, name: str) -> dict[str, Any]:
        """GET one model and its pairs."""
        return self._registry_json(self._request("GET", f"/v1/models/{name}"))

    def list_versions(
        self,
        name: str,
        *,
        feature_set: str | None = None,
        status: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """GET a page of one pair's versions."""
        params = _params(feature_set=feature_set, status=status, sort=sort, limit=limit, cursor=cursor)
        return self._registry_json(self._request("GET", f"/v1/models/{name}/versions", params=params))

    def get_version(self, name: str, version: int, *, feature_set: str | None = None) -> dict[str, Any]:
        """GET one version with everything the registry holds."""
        path = f"/v1/models/{name}/versions/{version}"
        return self._registry_json(self._request("GET", path, params=_params(feature_set=feature_set)))

    def get_card(self, name: str, version: int, *, fmt: str, feature_set: str | None = None) -> str:
        """GET a version's model card as text (``json``, ``md`` or ``html``)."""
        path = f"/v1/models/{name}/versions/{version}/card"
        response = self._request("GET", path, params=_params(format=fmt, feature_set=feature_set))
        if not response.is_success:
            self._registry_json(response)
        return response.text

    def update_status(
        self,
        name: str,
        version: int,
        status: str,
        *,
        reason: str | None = None,
        override: bool = False,
        feature_set: str | None = None,
    ) -> dict[str, Any]:
        """PATCH a version's status (admin key); returns the version as changed."""
        body: dict[str, Any] = {"status": status, "override": override}
        if reason is not None:
            body["reason"] = reason
        path = f"/v1/models/{name}/versions/{version}"
        return self._registry_json(
            self._request("PATCH", path, json=body, params=_params(feature_set=feature_set))
        )

    def set_alias(
        self, name: str, alias: str, version: int, *, feature_set: str | None = None
    ) -> dict[str, Any]:
        """PUT an alias on a version (admin key); returns the version now holding it."""
        path = f"/v1/models/{name}/aliases/{alias}"
        return self._registry_json(
            self._request("PUT", path, json={"version": version}, params=_params(feature_set=feature_set))
        )

    def _registry_json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code not in (404, 409, 422):
            return self._json(response)
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        message = _detail_text(response)
        if body.get("code") == "ambiguous_feature_set":
            example = str((body.get("feature_sets") or ["<name>@<version>"])[0])
            message = (
                f"{message.split('; choose')[0]}; choose one with --feature-set, e.g. --feature-set {example}"
            )
        elif body.get("code") == "gate_failed":
            message += "; to go ahead anyway, pass --override with --reason '<why>' (it is recorded)"
        elif body.get("code") == "illegal_transition" and body.get("allowed") is not None:
            allowed = ", ".join(body["allowed"]) or "nothing (it is final)"
            message += f" (from {body.get('from_status')} it may move to: {allowed})"
        elif body.get("issues"):
            message = "; ".join(
                f"{issue.get('path')}: {issue.get('message')}"
                for issue in body["issues"]
                if isinstance(issue, dict)
            )
        raise RegistryRefused(
            message, status_code=response.status_code, code=str(body.get("code", "")), body=body
        )

    # ------------------------------------------------------------------ internals

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise GatewayUnreachable(
                f"cannot reach the gateway at {self.base_url} "
                f"({type(error).__name__}: {error or 'no answer'}). "
                "Is the stack up? Run `make up` (or `pfactory up`), or point --url / PF_GATEWAY_URL at it."
            ) from error
        if response.status_code == 401:
            advice = "the gateway did not accept the API key" if self._has_key else "no API key was sent"
            raise GatewayAuthError(
                f"401 Unauthorized: {advice}. Pass --api-key or set PF_API_KEY; a local stack's admin key "
                "is in .pfactory/credentials.json (written by `pfactory up`)."
            )
        if response.status_code == 403:
            raise GatewayAuthError(
                f"403 Forbidden: the API key is valid but lacks the scope for {method} {path} "
                f"({_detail_text(response)}). Ask an admin for a key with that scope."
            )
        return response

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.is_success:
            body = response.json()
            if not isinstance(body, dict):
                raise GatewayError(f"unexpected answer from {response.request.url}: {body!r}")
            return body
        raise GatewayError(
            f"{response.request.method} {response.request.url.path} failed with "
            f"{response.status_code}: {_detail_text(response)}"
        )


def _params(**values: object) -> dict[str, str]:
    """Query parameters, leaving out the unset ones."""
    return {key: str(value) for key, value in values.items() if value is not None}


def _detail_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, dict):
            return str(detail.get("summary") or detail.get("message") or detail)
        return str(detail)
    return str(body)[:500]


def _config_rejected(response: httpx.Response) -> ConfigRejected:
    """Read a 422: ``{"detail", "code", "summary", "issues": [...]}`` (issues may also sit under detail)."""
    try:
        body = response.json()
    except ValueError:
        return ConfigRejected(summary=response.text[:500], issues=[])
    if not isinstance(body, dict):
        return ConfigRejected(summary=str(body)[:500], issues=[])
    detail = body.get("detail")
    holder = body if "issues" in body else detail if isinstance(detail, dict) else {}
    if isinstance(detail, list):  # FastAPI's own request validation errors
        issues: list[Any] = [
            {"path": ".".join(str(p) for p in item.get("loc", [])), "message": item.get("msg", str(item))}
            for item in detail
            if isinstance(item, dict)
        ]
        return ConfigRejected(summary="the request was malformed", issues=issues)
    issues = list(holder.get("issues") or [])
    summary = str(holder.get("summary") or detail or f"{len(issues)} problem(s) in config")
    return ConfigRejected(summary=summary, issues=[i for i in issues if isinstance(i, dict)])
