"""The registry as the gateway's routes see it: choosing a pair, views, errors as advice, feed wake-ups.

The lifecycle rules live in ``pfactory.registry.model``; this module only translates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from fastapi import Request

from pfactory.contracts.events import FeatureSetRef
from pfactory.gateway.errors import ApiError
from pfactory.gateway.registry_schemas import ModelPublic, PairPublic, VersionPublic, VersionSummaryPublic
from pfactory.gateway.routes.common import registry_feed_of
from pfactory.registry.errors import (
    ConcurrentUpdateError,
    GateFailedError,
    IllegalTransitionError,
    VersionNotFoundError,
)
from pfactory.registry.index import ModelCatalog
from pfactory.registry.model import LEGAL_TRANSITIONS, ModelVersion, PairKey, VersionStatus
from pfactory.registry.wiring import Registry, RegistryIndex


def registry_of(request: Request) -> Registry:
    """The app's registry (built once by the lifespan)."""
    registry: Registry = request.app.state.registry
    return registry


def catalog_of(request: Request) -> ModelCatalog:
    """The registry's index as a model catalog (both backends are one)."""
    index = registry_of(request).index
    if not isinstance(index, ModelCatalog):  # a backend without catalog reads cannot list models
        raise ApiError(501, "catalog_unsupported", f"{type(index).__name__} cannot list models or pairs")
    return index


def feature_set_text(ref: FeatureSetRef) -> str:
    """``<name>@<version>``."""
    return f"{ref.name}@{ref.version}"


def versions_path(name: str, pair: PairKey) -> str:
    """Path of a pair's version listing."""
    return f"/v1/models/{name}/versions?feature_set={feature_set_text(pair.feature_set)}"


def version_path(record: ModelVersion, suffix: str = "") -> str:
    """Path of a version (``suffix`` e.g. ``/artifact``), with the pair's feature set."""
    return (
        f"/v1/models/{record.model_name}/versions/{record.version}{suffix}"
        f"?feature_set={feature_set_text(record.feature_set)}"
    )


def invalid_parameter(name: str, message: str) -> ApiError:
    """A 422 shaped like the other request errors (``summary`` + ``issues``)."""
    issue = {
        "file": None,
        "line": None,
        "column": None,
        "path": name,
        "message": message,
        "expected": None,
        "suggestion": None,
        "code": "invalid_request",
    }
    summary = f"1 problem in the request ({name}: {message})"
    return ApiError(
        422, "invalid_request", f"the request was refused: {summary}", summary=summary, issues=[issue]
    )


def parse_feature_set(text: str) -> FeatureSetRef:
    """``name@version`` → a ref; 422 otherwise."""
    name, at, version = text.partition("@")
    if not (name and at and version):
        raise invalid_parameter(
            "feature_set", f"{text!r} is not <feature set name>@<version>, e.g. credit_features@3"
        )
    return FeatureSetRef(name=name, version=version)


async def resolve_pair(catalog: ModelCatalog, name: str, feature_set: str | None) -> PairKey:
    """The pair a request means: the model's only pair, or the one ``feature_set`` names.

    Raises:
        ApiError: 404 unknown model or feature set, 409 several pairs and none chosen, 422 malformed.
    """
    pairs = await catalog.list_pairs(name)
    if not pairs:
        raise ApiError(
            404,
            "model_not_found",
            f"no model named '{name}' is registered; list the models with GET /v1/models",
        )
    choices = [feature_set_text(pair.feature_set) for pair in pairs]
    if feature_set is None:
        if len(pairs) == 1:
            return pairs[0]
        raise ApiError(
            409,
            "ambiguous_feature_set",
            f"model '{name}' is registered on {len(pairs)} feature sets ({', '.join(choices)}); "
            f"choose one with ?feature_set=<name>@<version>, e.g. ?feature_set={choices[0]}",
            feature_sets=choices,
        )
    ref = parse_feature_set(feature_set)
    for pair in pairs:
        if pair.feature_set == ref:
            return pair
    raise ApiError(
        404,
        "feature_set_not_found",
        f"model '{name}' has no versions on feature set {feature_set}; it is registered on {', '.join(choices)}",
        feature_sets=choices,
    )


@contextmanager
def registry_errors(pair: PairKey, *, version: int | None = None, alias: str | None = None) -> Iterator[None]:
    """Turn the registry's errors into API errors that say what to do."""
    fs = feature_set_text(pair.feature_set)
    try:
        yield
    except IllegalTransitionError as error:
        code = "gate_failed" if isinstance(error, GateFailedError) else "illegal_transition"
        raise ApiError(409, code, str(error)) from error
    except VersionNotFoundError as error:
        if alias is not None and version is None:
            raise ApiError(
                404,
                "alias_not_found",
                f"no version of model '{pair.model_name}' on {fs} holds the alias '{alias}'; "
                f"set it with PUT /v1/models/{pair.model_name}/aliases/{alias}?feature_set={fs}",
            ) from error
        raise ApiError(
            404,
            "version_not_found",
            f"model '{pair.model_name}' on feature set {fs} has no version {version}; "
            f"list its versions with GET {versions_path(pair.model_name, pair)}",
        ) from error
    except ConcurrentUpdateError as error:
        raise ApiError(503, "concurrent_update", f"{error}; retry the request") from error


def refused(error: IllegalTransitionError, record: ModelVersion, to: VersionStatus) -> ApiError:
    """A 409 for a refused status change: where the version is, where it may go, its failed gates."""
    return ApiError(
        409,
        "gate_failed" if isinstance(error, GateFailedError) else "illegal_transition",
        str(error),
        from_status=record.status.value,
        to_status=to.value,
        allowed=sorted(status.value for status in LEGAL_TRANSITIONS[record.status]),
        failed_gates=record.failed_gates,
    )


def registry_changed(request: Request) -> None:
    """Wake the registry feed after a change, so its ``ModelVersionChanged`` goes out promptly.

    The event itself is derived from the registry's audit trail by the feed (``registry_feed``), so a
    crash right after the change cannot lose it.
    """
    feed = registry_feed_of(request)
    if feed is not None:
        feed.wake()


def version_summary(record: ModelVersion) -> VersionSummaryPublic:
    """The listed view of a version."""
    return VersionSummaryPublic(
        model_name=record.model_name,
        feature_set=feature_set_text(record.feature_set),
        pair=str(record.pair),
        version=record.version,
        status=record.status,
        aliases=sorted(record.aliases),
        failed_gates=record.failed_gates,
        metrics=dict(record.metrics),
        artifact=record.artifact,
        created_by=record.created_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
        url=version_path(record),
    )


def version_public(record: ModelVersion) -> VersionPublic:
    """Everything about a version."""
    return VersionPublic(
        **version_summary(record).model_dump(),
        allocation_key=record.allocation_key,
        framework=record.framework,
        library_versions=dict(record.library_versions),
        config=record.config,
        fairness=record.fairness,
        gates=dict(record.gates),
        reference_uri=record.reference_uri,
        lineage=record.lineage,
        audit=list(record.audit),
        artifact_url=version_path(record, "/artifact"),
        card_url=version_path(record, "/card"),
    )


async def model_public(index: RegistryIndex, name: str, pairs: Sequence[PairKey]) -> ModelPublic:
    """A model with each pair's newest and live version."""
    views = []
    for pair in pairs:
        newest = await index.list_versions(pair, limit=1)
        live = await index.get_live(pair)
        views.append(
            PairPublic(
                pair=str(pair),
                feature_set=feature_set_text(pair.feature_set),
                latest_version=newest.items[0].version if newest.items else None,
                live_version=live.version if live is not None else None,
                versions_url=versions_path(name, pair),
            )
        )
    return ModelPublic(name=name, pairs=views)
