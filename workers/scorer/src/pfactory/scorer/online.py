"""The online prediction API: ``POST /v1/models/{name}/predict`` against registered versions.

The hot path makes no registry round trip: a request's (model, feature set, version or alias) is
looked up in :class:`pfactory.scorer.served.ServedModels`, which resolves a key once on first use and then re-resolves
aliases and live versions in the background every ``reload_interval_s``. A moved alias's new
version is loaded before it replaces the old one, so no request waits for a load.

Requests of up to :data:`INLINE_ROWS` rows are checked one by one, then scored together with the
other requests for the same version that arrived meanwhile (:mod:`pfactory.scorer.batching`): one
model call per batch instead of one per request. The predict route is dispatched ahead of FastAPI
(:class:`OnlineApp`): its body is parsed and validated by pydantic-core straight from the bytes and
the answer written by its JSON encoder, which skips FastAPI's middleware, routing and dependency
solving (in process, 0.5 ms for a trivial endpoint with a pydantic body against 0.03 ms). FastAPI
serves /health, /ready and the docs, whose schema lists the predict route.

Metrics stay off the hot path's budget: a scored request sends one DogStatsD line (its latency);
its rows are added up in memory per version and sent as one count each ``metrics_interval_s``
(:class:`RowTally`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry.errors import VersionNotFoundError
from pfactory.registry.index import ModelCatalog
from pfactory.registry.loading import LoaderIndex, VersionLoader
from pfactory.registry.wiring import Registry, build_registry
from pfactory.scorer.batching import Scores
from pfactory.scorer.served import Served, ServedModels, ServeKey
from pfactory.scorer.settings import OnlineSettings
from pfactory.scorer.signature import RowsRejected
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics, TagValue

log = logging.getLogger("pfactory.scorer.online")

SERVICE = "scorer-online"
"""The online API's Datadog ``service``."""

INLINE_ROWS = 100
"""Requests up to this many rows are batched and predicted on the event loop; larger ones in a thread."""

PREDICT_PATH = "/v1/models/{name}/predict"


class PredictRequest(BaseModel):
    """Rows to score, and which version: a number, an alias, or (neither) the live version."""

    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Any]] = Field(description="One JSON object per row, keyed by input column.")
    version: int | None = Field(default=None, ge=1, description="A version number.")
    alias: str | None = Field(default=None, min_length=1, description="An alias such as 'champion'.")
    feature_set: str | None = Field(
        default=None, description="'name@version', when the model is registered on several feature sets."
    )


class Prediction(BaseModel):
    """One row's answer."""

    score: float | None = Field(
        description="Positive-class probability (binary), top probability (multiclass), else the prediction."
    )
    label: Any = Field(description="The predicted class; null for regression.")


class PredictResponse(BaseModel):
    """The version that answered and one prediction per row, in order."""

    model: str
    feature_set: str
    version: int
    predictions: list[Prediction]


def accepted_key(raw: str, hashes: frozenset[str]) -> bool:
    """Whether ``raw`` is an accepted key: sha256 of its secret part (``pf_<id>_<secret>``) or of the whole."""
    parts = raw.split("_", 2)
    candidates = [raw] if len(parts) != 3 or parts[0] != "pf" else [parts[2], raw]
    for text in candidates:
        digest = hashlib.sha256(text.encode()).hexdigest()
        if any(hmac.compare_digest(digest, accepted) for accepted in hashes):
            return True
    return False


def _headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The request's media type (lower case, no parameters) and its API key, if any."""
    media_type = authorization = api_key = None
    for header, value in headers:  # ASGI gives the names in lower case
        if header == b"content-type":
            media_type = value.decode("latin-1").partition(";")[0].strip().lower()
        elif header == b"authorization":
            authorization = value.decode("latin-1")
        elif header == b"x-api-key":
            api_key = value.decode("latin-1")
    if authorization and authorization[:7].lower() == "bearer ":
        return media_type, authorization[7:].strip()
    return media_type, api_key


def _is_json(media_type: str | None) -> bool:
    return media_type is not None and (media_type == "application/json" or media_type.endswith("+json"))


def _problem(status: int, detail: Any, **extra: Any) -> tuple[int, bytes]:
    return status, to_json({"detail": detail, **extra}, fallback=str, inf_nan_mode="null")


def _feature_set(text: str | None) -> FeatureSetRef | None:
    if text is None:
        return None
    name, sep, version = text.partition("@")
    if not sep or not name or not version:
        raise ValueError(f"feature_set {text!r} is not 'name@version' (for example 'credit_features@1')")
    return FeatureSetRef(name=name, version=version)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client went away first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class RowTally:
    """Rows scored online per version, added up in memory and sent as one count per version by :meth:`flush`.

    Used from the event loop only (no lock).
    """

    def __init__(self, metrics: Metrics) -> None:
        """Count into ``metrics``'s catalog.SCORING_ROWS."""
        self.metrics = metrics
        self._rows: dict[tuple[str, int], int] = {}
        self._tags: dict[tuple[str, int], dict[str, TagValue]] = {}

    def add(self, served: Served, rows: int) -> None:
        """Count ``rows`` scored by ``served``."""
        key = served.version_key
        counted = self._rows.get(key)
        if counted is None:
            record = served.loaded.record
            self._tags[key] = {
                "model": record.model_name,
                "feature_set": str(record.feature_set),
                "model_version": record.version,
                "mode": "online",
            }
            counted = 0
        self._rows[key] = counted + rows

    def flush(self) -> None:
        """Send the counts since the last flush, one line per version."""
        rows, self._rows = self._rows, {}
        for key, count in rows.items():
            self.metrics.emit(catalog.SCORING_ROWS, count, **self._tags[key])


class PredictEndpoint:
    """``POST /v1/models/{name}/predict``: check the key, the body and the rows, then score."""

    def __init__(
        self, settings: OnlineSettings, models: Callable[[], ServedModels], metrics: Metrics | None = None
    ) -> None:
        """Answer with the versions ``models()`` serves (available once the app has started).

        ``metrics`` receives each scored request's latency and, through :attr:`rows`, the rows scored.
        """
        self.settings, self.models = settings, models
        self.hashes = frozenset(settings.api_key_sha256s)
        self.check_keys = settings.auth == "keys"
        self.metrics = metrics or Metrics.disabled(SERVICE)
        self.rows = RowTally(self.metrics)

    async def __call__(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body, answer it, send the JSON answer (ASGI, the model's name taken from the path)."""
        body = await _read_body(receive)
        if body is None:
            return
        try:
            status, payload = await self.answer(name, body, scope["headers"])
        except Exception:  # a bug, not a bad request: the caller learns that much, the log the rest
            log.exception("predict failed")
            status, payload = _problem(500, "the scorer failed on this request; its log has the details")
        await _send_json(send, status, payload, [])

    async def answer(self, name: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        """The status and JSON body answering one request.

        Args:
            name: the model named in the path.
            body: the raw request body (a :class:`PredictRequest` as JSON).
            headers: the request headers, names in lower case.
        """
        started = time.perf_counter()
        media_type, raw = _headers(headers)
        if self.check_keys:
            if not raw:
                return _problem(
                    401, "an API key is required: send 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
                )
            if not accepted_key(raw, self.hashes):
                return _problem(401, "the API key is not accepted by this service")
        if not _is_json(media_type):  # as FastAPI's strict content type: no JSON from a plain form post
            return _problem(
                415,
                f"send the body as JSON with 'Content-Type: application/json'; got {media_type or 'none'}",
            )
        try:
            request = PredictRequest.model_validate_json(body)
        except ValidationError as invalid:  # FastAPI's shape: the body's errors, located under "body"
            errors = invalid.errors(include_url=False)
            return _problem(422, [{**e, "loc": ["body", *e["loc"]]} for e in errors])
        rows = request.rows
        if not rows or len(rows) > self.settings.max_rows:
            return _problem(422, f"send between 1 and {self.settings.max_rows} rows; got {len(rows)}")
        try:
            key = ServeKey(name, _feature_set(request.feature_set), request.version, request.alias)
            served = await self.models().get(key)
        except VersionNotFoundError as error:
            return _problem(404, str(error))
        except ValueError as error:
            return _problem(422, str(error))
        if not served.signature.columns:
            return _problem(
                409,
                f"{served.loaded.record.label} records no input signature, so its input cannot be "
                "checked; retrain it with the current trainer",
            )
        try:
            served.signature.check(rows)
            if len(rows) <= INLINE_ROWS:
                scores, labels = await served.batcher.submit(rows)
            else:  # a large request would hold the event loop for every other caller
                scores, labels = await asyncio.to_thread(served.score, rows)
        except RowsRejected as rejected:
            problems = [p.as_dict() for p in rejected.problems]
            return _problem(422, str(rejected), problems=problems, problems_total=rejected.total)
        except ValueError as error:
            return _problem(422, f"{served.loaded.record.label} could not score these rows: {error}")
        except Exception as error:  # the model failed on rows that passed the signature check
            log.exception("%s failed on a request's rows", served.loaded.record.label)
            return _problem(
                500,
                f"{served.loaded.record.label} failed on these rows ({type(error).__name__}: {error}); "
                "the scorer's log has the traceback",
            )
        answer = _answer(served, (scores, labels))
        record = served.loaded.record
        self.metrics.emit(
            catalog.SCORING_LATENCY,
            (time.perf_counter() - started) * 1000,
            model=record.model_name,
            feature_set=str(record.feature_set),
            model_version=record.version,
            mode="online",
        )
        self.rows.add(served, len(rows))
        return 200, answer


def _answer(served: Served, scored: Scores) -> bytes:
    record = served.loaded.record
    scores, labels = scored
    return to_json(
        {
            "model": record.model_name,
            "feature_set": str(record.feature_set),
            "version": record.version,
            "predictions": [{"score": s, "label": lab} for s, lab in zip(scores, labels, strict=True)],
        },
        fallback=str,  # a label of a type JSON lacks (a date class, say) as its text
        inf_nan_mode="null",  # a model's NaN score as null: NaN is not JSON
    )


class OnlineApp(FastAPI):
    """FastAPI for /health, /ready and the docs, with the predict route dispatched ahead of its stack.

    FastAPI's middleware, routing and dependency solving cost more per request than checking and
    scoring one row does, so ``POST /v1/models/{name}/predict`` goes straight to its endpoint (which
    answers every error itself); every other request, and the lifespan, is FastAPI's.
    """

    def __init__(self, predict: PredictEndpoint, **fastapi: Any) -> None:
        """Serve ``predict`` at :data:`PREDICT_PATH`; ``fastapi`` goes to :class:`FastAPI`."""
        super().__init__(**fastapi)
        self.predict = predict
        self.openapi = _openapi_with_predict(self)  # type: ignore[method-assign]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch predictions to the endpoint, anything else to FastAPI."""
        if scope["type"] == "http":
            name = _predicted_model(scope)
            if name is not None:
                if scope["method"] == "POST":
                    await self.predict(name, scope, receive, send)
                else:
                    await _send_json(send, 405, b'{"detail":"Method Not Allowed"}', [(b"allow", b"POST")])
                return
        await super().__call__(scope, receive, send)


_PREFIX, _SUFFIX = "/v1/models/", "/predict"


def _predicted_model(scope: Scope) -> str | None:
    """The model a predict path names (``/v1/models/{name}/predict``, below any root path), else None."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if path.startswith(_PREFIX) and path.endswith(_SUFFIX) and len(path) > len(_PREFIX) + len(_SUFFIX):
        name = path[len(_PREFIX) : -len(_SUFFIX)]
        if "/" not in name:
            return name
    return None


async def _send_json(send: Send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def build_app(settings: OnlineSettings, registry: Registry | None = None) -> FastAPI:
    """The online API over the registry the settings name (or ``registry``, which the caller then owns).

    Args:
        settings: the service settings.
        registry: an open registry to serve from; None opens (and closes) one from ``settings.registry``.
    """
    state: dict[str, Any] = {"preloaded": set()}
    metrics = settings.telemetry.metrics(SERVICE)
    endpoint = PredictEndpoint(settings, lambda: state["models"], metrics)

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

    async def counter() -> None:
        while True:
            await asyncio.sleep(settings.metrics_interval_s)
            endpoint.rows.flush()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = registry or await build_registry(settings.registry)
        if not isinstance(opened.index, ModelCatalog):
            raise TypeError(f"{type(opened.index).__name__} cannot list a model's pairs (ModelCatalog)")
        loader = VersionLoader(
            cast(LoaderIndex, opened.index), opened.artifacts, cache_size=settings.model_cache_size
        )
        models = ServedModels(loader, settings.model_cache_size, settings.max_batch_rows)
        state["models"] = app.state.models = models
        tasks = [
            asyncio.create_task(preload(models)),
            asyncio.create_task(refresher(models)),
            asyncio.create_task(counter()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            endpoint.rows.flush()
            metrics.close()
            if registry is None:
                await opened.close()

    app = OnlineApp(
        endpoint,
        title="Prediction Factory online scoring",
        lifespan=lifespan,
    )

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
            return JSONResponse({"detail": f"the registry does not answer: {error!r}"}, status_code=503)
        waiting = [name for name in settings.preload if name not in state["preloaded"]]
        if waiting:
            return JSONResponse(
                {"detail": f"still loading the live versions of: {', '.join(waiting)}"}, status_code=503
            )
        return JSONResponse({"status": "ready"})

    return app


def _openapi_with_predict(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema of the app, plus the predict route (a plain ASGI route FastAPI cannot describe)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PredictRequest, PredictResponse):
                described = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(described.pop("$defs", {}))
                components[model.__name__] = described
            problem = {"description": "The reason, in 'detail'."}
            schema["paths"][PREDICT_PATH] = {
                "post": {
                    "summary": "Predict",
                    "description": "Score the rows with a version of `name` (by number, alias, or the live one); "
                    "every row is checked against the version's input signature first.",
                    "operationId": "predict",
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "One prediction per row.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/PredictResponse"}
                                }
                            },
                        },
                        "401": problem,
                        "404": {
                            "description": "No such model, version or alias; 'detail' lists what exists."
                        },
                        "409": problem,
                        "422": {"description": "The body or rows are wrong; 'problems' lists each one."},
                    },
                }
            }
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def serve(settings: OnlineSettings) -> None:
    """Run the online API under uvicorn until SIGTERM/SIGINT.

    uvicorn takes httptools and uvloop where they are installed (about a quarter of h11's and
    asyncio's CPU per request on loopback), else h11 and asyncio.
    """
    import uvicorn

    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        server_header=False,  # one header less to write per answer, and no server name given away
    )
