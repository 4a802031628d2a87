"""``VersionLoader``: find the version a request means, and load it safely, once.

Resolution always asks the index (an alias may have moved since the last request); loading is
cached by (pair, version), which never changes once committed, so a second load costs nothing.
Loading checks the artifact's sha256 and trusts only allowlisted types
(:func:`pfactory.registry.serialization.load_model`).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.errors import RegistryError, VersionNotFoundError
from pfactory.registry.index import ModelCatalog, VersionIndex, VersionLifecycle
from pfactory.registry.model import ModelVersion, PairKey
from pfactory.registry.serialization import load_model
from pfactory.registry.staging import key_from_uri

_LISTED = 20
"""The most versions or pairs named in an error message."""


class LoaderIndex(VersionIndex, VersionLifecycle, ModelCatalog, Protocol):
    """What the loader reads: versions, aliases and the live version, and a model's pairs."""


class ReferenceDocumentError(RegistryError):
    """A version's reference document is unreadable."""


@dataclass(frozen=True)
class LoadedModel:
    """A version ready to predict: its record, estimator, drift reference and input signature."""

    record: ModelVersion
    estimator: Any
    reference: dict[str, Any] | None
    signature: list[dict[str, Any]] = field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        """The input columns in training order (empty when the version recorded no reference)."""
        return [str(column["name"]) for column in self.signature]


class VersionLoader:
    """Resolves requests to versions and loads them, keeping the last ``cache_size`` loaded."""

    def __init__(self, index: LoaderIndex, artifacts: ArtifactStore, *, cache_size: int = 8) -> None:
        """Wire the loader to the registry's stores.

        Args:
            index: the registry's metadata index.
            artifacts: the registry's artifact store (model binaries and references).
            cache_size: loaded versions kept in memory, least recently used evicted first.
        """
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.index, self.artifacts, self.cache_size = index, artifacts, cache_size
        self._cache: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def resolve(
        self,
        model_name: str,
        *,
        feature_set: FeatureSetRef | None = None,
        version: int | None = None,
        alias: str | None = None,
    ) -> ModelVersion:
        """The version a request names: by number, by alias, or the live one.

        Args:
            model_name: the model.
            feature_set: which of the model's feature-set pairs; None when it has only one.
            version: a version number (give a version or an alias, not both).
            alias: an alias such as ``champion``.

        Returns:
            The committed version record.

        Raises:
            ValueError: both ``version`` and ``alias`` given.
            VersionNotFoundError: no such model, pair, version, alias or live version; the message
                names what exists.
        """
        if version is not None and alias is not None:
            raise ValueError(f"{model_name}: name a version ({version}) or an alias ({alias!r}), not both")
        pair = await self._pair(model_name, feature_set)
        if version is not None:
            try:
                return await self.index.get(pair, version)
            except VersionNotFoundError:
                raise VersionNotFoundError(
                    f"{pair} has no version {version}; it has {await self._versions(pair)}"
                ) from None
        if alias is not None:
            try:
                return await self.index.get_by_alias(pair, alias)
            except VersionNotFoundError:
                raise VersionNotFoundError(
                    f"{pair}: no version holds the alias {alias!r}; it has {await self._versions(pair)}"
                ) from None
        live = await self.index.get_live(pair)
        if live is None:
            raise VersionNotFoundError(
                f"{pair} has no live version; it has {await self._versions(pair)}: name a version or an "
                "alias, or promote a version to live"
            )
        return live

    async def load(self, record: ModelVersion) -> LoadedModel:
        """The version's estimator, reference and signature; cached by (pair, version).

        Args:
            record: a committed version (from :meth:`resolve`).

        Returns:
            The loaded model.

        Raises:
            ArtifactIntegrityError: the binary's sha256 is not the registered one.
            UntrustedTypeError: the binary holds types outside the trusted modules.
            ArtifactNotFoundError: the binary or reference is missing from the store.
        """
        key = (str(record.pair), record.version)
        cached = self._hit(key)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent first requests for one version load it once
            cached = self._hit(key)
            if cached is not None:
                return cached
            loaded = await self._load(record)
            self._cache[key] = loaded
            while len(self._cache) > self.cache_size:
                evicted, _ = self._cache.popitem(last=False)
                self._locks.pop(evicted, None)
            return loaded

    def _hit(self, key: tuple[str, int]) -> LoadedModel | None:
        loaded = self._cache.get(key)
        if loaded is not None:
            self._cache.move_to_end(key)
        return loaded

    async def _load(self, record: ModelVersion) -> LoadedModel:
        data = await self.artifacts.read(key_from_uri(self.artifacts, record.artifact.uri))
        # parsing a model is CPU work; keep the event loop free for other requests
        estimator = await asyncio.to_thread(
            load_model, data, expected_sha256=record.artifact.sha256, version_label=record.label
        )
        reference = None
        if record.reference_uri is not None:
            text = await self.artifacts.read(key_from_uri(self.artifacts, record.reference_uri))
            try:
                reference = json.loads(text)
            except ValueError as error:
                raise ReferenceDocumentError(
                    f"{record.label}: its reference {record.reference_uri} is not JSON ({error})"
                ) from error
        signature = list(reference.get("signature", [])) if isinstance(reference, dict) else []
        return LoadedModel(record, estimator, reference, signature)

    async def _pair(self, model_name: str, feature_set: FeatureSetRef | None) -> PairKey:
        pairs = await self.index.list_pairs(model_name)
        if not pairs:
            page = await self.index.list_models(limit=_LISTED)
            known = ", ".join(page.items) or "none"
            raise VersionNotFoundError(f"no model {model_name!r} is registered; registered models: {known}")
        named = ", ".join(str(p.feature_set) for p in pairs[:_LISTED])
        if feature_set is None:
            if len(pairs) == 1:
                return pairs[0]
            raise VersionNotFoundError(
                f"model {model_name!r} is registered on {len(pairs)} feature sets ({named}); "
                "name the feature set (name@version) to use"
            )
        pair = PairKey(model_name=model_name, feature_set=feature_set)
        if pair not in pairs:
            raise VersionNotFoundError(
                f"model {model_name!r} has no version on feature set {feature_set}; it is registered on {named}"
            )
        return pair

    async def _versions(self, pair: PairKey) -> str:
        page = await self.index.list_versions(pair, limit=_LISTED)
        if not page.items:
            return "no committed versions"
        described = [
            f"{v.version} ({v.status}{', ' + ', '.join(sorted(v.aliases)) if v.aliases else ''})"
            for v in page.items
        ]
        more = " …" if page.next_cursor else ""
        return "versions " + "; ".join(described) + more
