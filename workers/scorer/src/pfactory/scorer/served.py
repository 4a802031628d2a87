"""The versions the online API serves, by request key, and predictions from one of them.

A request's (model, feature set, version or alias) is resolved against the registry once, then
served from memory; :meth:`ServedModels.refresh` (run by the API every ``reload_interval_s``)
re-resolves aliases and live versions and loads a moved one before it takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from pfactory.contracts.events import FeatureSetRef
from pfactory.registry.errors import VersionNotFoundError
from pfactory.registry.loading import LoadedModel, VersionLoader
from pfactory.scorer.batch import scores_of
from pfactory.scorer.batching import BatchStats, PredictionBatcher, Scores
from pfactory.scorer.signature import Signature

log = logging.getLogger("pfactory.scorer.online")


class ServeKey(NamedTuple):
    """What a request asks for; a key without version follows its alias or the live version."""

    model_name: str
    feature_set: FeatureSetRef | None
    version: int | None
    alias: str | None


@dataclass(frozen=True)
class Served:
    """A loaded version with its compiled signature and the batcher its small requests share."""

    loaded: LoadedModel
    signature: Signature
    task: str
    version_key: tuple[str, int]
    max_batch_rows: int = 1024
    batcher: PredictionBatcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "batcher", PredictionBatcher(self.score, self.max_batch_rows))

    def score(self, rows: list[dict[str, Any]]) -> Scores:
        """Scores and labels of checked rows, one per row.

        Raises:
            RowsRejected: a timestamp that does not parse.
            ValueError: the model refuses the rows.
        """
        return predict_rows(self, self.signature.frame(rows))


class ServedModels:
    """The versions requests are served from, by key; aliases and live versions refreshed in the background.

    At most ``cache_size`` versions are held (least recently used dropped first, with the keys that
    pointed at them), so requests naming many old versions cannot grow memory without bound.
    """

    def __init__(self, loader: VersionLoader, cache_size: int, max_batch_rows: int = 1024) -> None:
        """Serve from ``loader`` (resolution and the cached, checked loads), holding ``cache_size`` versions.

        ``max_batch_rows`` caps the rows of concurrent requests one model call scores together.
        """
        self.loader, self.cache_size, self.max_batch_rows = loader, cache_size, max_batch_rows
        self._by_key: dict[ServeKey, Served] = {}
        self._by_version: OrderedDict[tuple[str, int], Served] = OrderedDict()
        self._resolving: dict[ServeKey, asyncio.Task[Served]] = {}

    async def get(self, key: ServeKey) -> Served:
        """The version for ``key``: from memory, else resolved and loaded now.

        Raises:
            VersionNotFoundError: no such model, pair, version or alias (the message lists what exists).
            ValueError: both a version and an alias.
        """
        served = self._by_key.get(key)
        if served is not None:
            self._by_version.move_to_end(served.version_key)
            return served
        # the first requests for a key arrive together: one resolution and load serves them all (and
        # one Served, so they share its batcher); a caller that goes away does not cancel it for the rest
        resolving = self._resolving.get(key)
        if resolving is None:
            resolving = self._resolving[key] = asyncio.create_task(self._resolve(key))
            resolving.add_done_callback(lambda done: self._resolved(key, done))
        return await asyncio.shield(resolving)

    def _resolved(self, key: ServeKey, done: asyncio.Task[Served]) -> None:
        del self._resolving[key]
        if not done.cancelled() and done.exception() is None:  # an error reaches every waiting caller
            self._by_key[key] = done.result()

    async def _resolve(self, key: ServeKey) -> Served:
        record = await self.loader.resolve(
            key.model_name, feature_set=key.feature_set, version=key.version, alias=key.alias
        )
        version_key = (str(record.pair), record.version)
        served = self._by_version.get(version_key)
        if served is None:
            loaded = await self.loader.load(record)
            # another key's resolution (an alias of the live version, say) may have loaded it meanwhile
            served = self._by_version.get(version_key) or self._hold(loaded, version_key)
        self._by_version.move_to_end(version_key)
        return served

    def _hold(self, loaded: LoadedModel, version_key: tuple[str, int]) -> Served:
        record = loaded.record
        task = str((record.config.get("spec") or {}).get("task", "binary_classification"))
        served = Served(loaded, Signature(loaded.signature), task, version_key, self.max_batch_rows)
        self._by_version[version_key] = served
        while len(self._by_version) > self.cache_size:
            _, evicted = self._by_version.popitem(last=False)
            for stale in [k for k, s in self._by_key.items() if s is evicted]:
                del self._by_key[stale]
        return served

    def batch_stats(self) -> BatchStats:
        """What the batchers of the versions held have done, added up."""
        total = BatchStats()
        for served in self._by_version.values():
            stats = served.batcher.stats
            total.predictions += stats.predictions
            total.requests += stats.requests
            total.rows += stats.rows
            total.retried_alone += stats.retried_alone
            total.largest_batch_requests = max(total.largest_batch_requests, stats.largest_batch_requests)
        return total

    async def refresh(self) -> None:
        """Resolve every alias and live key again; a moved one is loaded, then swapped in."""
        for key in [k for k in self._by_key if k.version is None]:
            try:
                served = await self._resolve(key)
            except VersionNotFoundError as error:
                # the alias was removed or nothing is live: the next request gets the 404 and its reason
                log.info("no longer serving %s: %s", key, error)
                self._by_key.pop(key, None)
                continue
            except Exception:  # a registry outage keeps the versions already served
                log.warning("could not refresh %s; still serving the loaded version", key, exc_info=True)
                continue
            if self._by_key.get(key) is not served:
                log.info("%s now serves %s", key, served.loaded.record.label)
            self._by_key[key] = served
        used = {s.version_key for s in self._by_key.values()}
        for stale in set(self._by_version) - used:  # versions no key serves any more
            del self._by_version[stale]


def predict_rows(served: Served, frame: Any) -> tuple[list[float], list[Any]]:
    """Scores (as the batch scorer computes them) and predicted labels of a frame.

    Returns:
        One score and one label per row; labels are None for regression.
    """
    estimator = served.loaded.estimator
    if served.task == "regression" or not hasattr(estimator, "predict_proba"):
        return scores_of(estimator, frame, served.task).tolist(), [None] * len(frame)
    remembering = _RememberingProba(estimator)
    scores = scores_of(remembering, frame, served.task)  # one predict_proba gives scores and labels
    classes = np.asarray(getattr(estimator, "classes_", []))
    proba = remembering.proba
    labels = (
        classes[proba.argmax(axis=1)].tolist() if proba is not None and len(classes) else [None] * len(frame)
    )
    return scores.tolist(), labels


class _RememberingProba:
    """Forwards ``predict_proba`` and keeps its answer, so labels need no second prediction."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.proba: NDArray[Any] | None = None
        self.classes_ = getattr(estimator, "classes_", [])

    def predict_proba(self, frame: Any) -> Any:
        self.proba = np.asarray(self.estimator.predict_proba(frame))
        return self.proba
