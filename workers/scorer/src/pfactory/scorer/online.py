"""The online prediction API: ``POST /v1/models/{name}/predict`` against registered versions.

The hot path makes no registry round trip: a request's (model, feature set, version or alias) is
looked up in :class:`pfactory.scorer.served.ServedModels`, which resolves a key once on first use and then re-resolves
aliases and live versions in the background every ``reload_interval_s``. A moved alias's new
version is loaded before it replaces the old one, so no request waits for a load.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry.errors import VersionNotFoundError
from pfactory.registry.index import ModelCatalog
from pfactory.registry.loading import LoaderIndex, VersionLoader
from pfactory.registry.wiring import Registry, build_registry
from pfactory.scorer.served import ServedModels, ServeKey, predict_rows
from pfactory.scorer.settings import OnlineSettings
from pfactory.scorer.signature import RowsRejected

log = logging.getLogger("pfactory.scorer.online")

INLINE_ROWS = 100
"""Requests up to this many rows predict on the event loop: a thread hop costs more than they do."""


class PredictRequest(BaseModel):
    """Rows to score, and which version: a number, an alias, or (neither) the live version."""

    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Any]] = Field(description="One JSON object per row, keyed by input column.")
    version: int | None = Field(default=None, ge=1, description="A version number.")
    alias: str | None = Field(default=None, min_length=1, description="An alias such as 'champion'.")
    feature_set: str | None = Field(
        default=None, description="'name@version', when the model is registered on several feature sets."
    )


def accepted_key(raw: str, hashes: frozenset[str]) -> bool:
    """Whether ``raw`` is an accepted key: sha256 of its secret part (``pf_<id>_<secret>``) or of the whole."""
    parts = raw.split("_", 2)
    candidates = [raw] if len(parts) != 3 or parts[0] != "pf" else [parts[2], raw]
    for text in candidates:
        digest = hashlib.sha256(text.encode()).hexdigest()
        if any(hmac.compare_digest(digest, accepted) for accepted in hashes):
            return True
    return False


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return request.headers.get("x-api-key")


def _problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def _feature_set(text: str | None) -> FeatureSetRef | None:
    if text is None:
        return None
    name, sep, version = text.partition("@")
    if not sep or not name or not version:
        raise ValueError(f"feature_set {text!r} is not 'name@version' (for example 'credit_features@1')")
    return FeatureSetRef(name=name, version=version)


def build_app(settings: OnlineSettings, registry: Registry | None = None) -> FastAPI:
    """The online API over the registry the settings name (or ``registry``, which the caller then owns).

    Args:
        settings: the service settings.
        registry: an open registry to serve from; None opens (and closes) one from ``settings.registry``.
    """
    hashes = frozenset(settings.api_key_sha256s)
    check_keys = settings.auth == "keys"
    state: dict[str, Any] = {"preloaded": set()}

    async def preload(models: ServedModels) -> None:
        for name in settings.preload:
            if name in state["preloaded"]:
                continue
            try:
                await models.get(ServeKey(name, None, None, None))
                state["preloaded"].add(name)
            except Exception:
                log.warning(
                    "could not preload %s; retrying in %s s", name, settings.reload_interval_s, exc_info=True
                )

    async def refresher(models: ServedModels) -> None:
        while True:
            await asyncio.sleep(settings.reload_interval_s)
            await preload(models)
            await models.refresh()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = registry or await build_registry(settings.registry)
        if not isinstance(opened.index, ModelCatalog):
            raise TypeError(f"{type(opened.index).__name__} cannot list a model's pairs (ModelCatalog)")
        loader = VersionLoader(
            cast(LoaderIndex, opened.index), opened.artifacts, cache_size=settings.model_cache_size
        )
        models = state["models"] = ServedModels(loader, settings.model_cache_size)
        tasks = [asyncio.create_task(preload(models)), asyncio.create_task(refresher(models))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if registry is None:
                await opened.close()

    app = FastAPI(title="Prediction Factory online scoring", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """The registry answers and every preloaded model is loaded."""
        models: ServedModels = state["models"]
        try:
            await asyncio.wait_for(models.loader.index.list_models(limit=1), timeout=2.0)
        except Exception as error:
            return _problem(503, f"the registry does not answer: {error!r}")
        waiting = [name for name in settings.preload if name not in state["preloaded"]]
        if waiting:
            return _problem(503, f"still loading the live versions of: {', '.join(waiting)}")
        return JSONResponse({"status": "ready"})

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, body: PredictRequest, request: Request) -> JSONResponse:
        """Score the rows with a version of ``name`` (by number, alias, or the live one)."""
        if check_keys:
            raw = _presented_key(request)
            if not raw:
                return _problem(
                    401, "an API key is required: send 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
                )
            if not accepted_key(raw, hashes):
                return _problem(401, "the API key is not accepted by this service")
        rows = body.rows
        if not rows or len(rows) > settings.max_rows:
            return _problem(422, f"send between 1 and {settings.max_rows} rows; got {len(rows)}")
        try:
            key = ServeKey(name, _feature_set(body.feature_set), body.version, body.alias)
            served = await state["models"].get(key)
        except VersionNotFoundError as error:
            return _problem(404, str(error))
        except ValueError as error:
            return _problem(422, str(error))
        signature = served.signature
        if not signature.columns:
            return _problem(
                409,
                f"{served.loaded.record.label} records no input signature, so its input cannot be "
                "checked; retrain it with the current trainer",
            )
        try:
            signature.check(rows)
            frame = signature.frame(rows)
        except RowsRejected as rejected:
            problems = [p.as_dict() for p in rejected.problems]
            return _problem(422, str(rejected), problems=problems, problems_total=rejected.total)
        try:
            if len(rows) <= INLINE_ROWS:
                scores, labels = predict_rows(served, frame)
            else:  # a large request would hold the event loop for every other caller
                scores, labels = await asyncio.to_thread(predict_rows, served, frame)
        except ValueError as error:
            return _problem(422, f"{served.loaded.record.label} could not score these rows: {error}")
        record = served.loaded.record
        return JSONResponse(
            {
                "model": record.model_name,
                "feature_set": str(record.feature_set),
                "version": record.version,
                "predictions": [{"score": s, "label": lab} for s, lab in zip(scores, labels, strict=True)],
            }
        )

    return app


def serve(settings: OnlineSettings) -> None:
    """Run the online API under uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    uvicorn.run(
        build_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False
    )
