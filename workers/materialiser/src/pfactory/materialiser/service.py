"""The materialiser's domain: one day (render → run → validate → write or quarantine → lineage) and ranges.

No network imports: the engine, the partition store and the validator are injected.

What a day can end as:

* ``good``: validated and written; ``_SUCCESS`` records rows, schema, validation summary, lineage,
  the entity and timestamp columns, and the config hash (a range run skips such a day when the hash
  is unchanged).
* ``quarantined``: the output broke an expectation. It is written to ``quarantine/...`` with the
  report, and the day's features folder holds only ``_FAILED`` (a previous good partition is
  removed: the latest run says that day's data is bad, so it must not look current).
* ``failed``: nothing could be computed (a broken template, a missing source, a SQL error);
  nothing is written and whatever the day held before is left as it was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pfactory.contracts.configs.featureset import FeatureSetConfig
from pfactory.materialiser.engine import (
    EngineError,
    ModelStep,
    OutputColumn,
    SourceTable,
    SqlEngine,
    resolve_location,
)
from pfactory.materialiser.lineage import column_lineage
from pfactory.materialiser.storage import (
    PartitionContent,
    PartitionKey,
    PartitionStore,
    column_statistics,
    table_schema,
)
from pfactory.materialiser.templates import RenderedFeatureSet, TemplateError, render_feature_set, source_view
from pfactory.materialiser.validation import CheckResult, PartitionValidator, checks_for
from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics

SERVICE = "materialiser"

log = logging.getLogger("pfactory.materialiser")

DayStatus = Literal["good", "quarantined", "failed"]


@dataclass(frozen=True)
class DayResult:
    """How one day ended."""

    ds: date
    status: DayStatus
    feature_set: str
    version: str
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    uri: str | None = None
    quarantine_uri: str | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    """The validation summary (counts and failing expectations with examples)."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """Failing expectations (quarantined) or template issues (failed), JSON-ready."""
    lineage: dict[str, list[str]] = field(default_factory=dict)
    reason: str | None = None
    skipped: bool = False
    """True when the day was already good with the same config hash and was not recomputed."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Time per stage: render, compute (the engine), validate, lineage, write."""

    @property
    def good(self) -> bool:
        """True when the day has a trusted partition."""
        return self.status == "good"


def config_hash(config: FeatureSetConfig) -> str:
    """sha256 of what determines a partition's content: the feature-set name and its spec."""
    payload = {"name": config.metadata.name, "spec": config.spec.model_dump(mode="json", by_alias=True)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def partition_key(config: FeatureSetConfig, ds: date) -> PartitionKey:
    """The partition a config writes for ``ds``."""
    return PartitionKey(config.metadata.name, str(config.spec.version), ds)


def days_between(start: date, end: date) -> list[date]:
    """Every day from ``start`` to ``end`` inclusive (empty when end < start)."""
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def output_columns(config: FeatureSetConfig) -> list[OutputColumn]:
    """The feature table's columns: entity key, timestamp, then the declared features."""
    spec = config.spec
    dtypes: dict[str, str | None] = {name: None for name in [*spec.entity, spec.timestamp]}
    for feature in spec.features:
        dtypes[feature.name] = feature.dtype.value
    return [OutputColumn(name, dtype) for name, dtype in dtypes.items()]


class Materialiser:
    """Materialises feature-set days with the injected engine, store and validator."""

    def __init__(
        self,
        engine: SqlEngine,
        store: PartitionStore,
        validator: PartitionValidator,
        *,
        data_root: str = ".",
        macros_dir: Path | None = None,
        sql_root: Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.validator = validator
        self.data_root = data_root
        self.macros_dir = macros_dir
        self.sql_root = sql_root
        self.metrics = metrics or Metrics.disabled(SERVICE)

    def materialise_day(
        self, config: FeatureSetConfig, ds: date, *, run_id: str | None = None, job_id: str | None = None
    ) -> DayResult:
        """Render, run, validate and write one day.

        Args:
            config: the validated feature set.
            ds: the run date.
            run_id: names the staging area (unique per attempt; generated when None).
            job_id: the request's job id, handed to an engine with ``begin_day`` (the EMR engine
                names and dedupes its remote run with it); None: ``run_id``.

        Returns:
            The day's outcome; errors of the day become a ``failed`` result with the reason.
        """
        return self._record(self._materialise_day(config, ds, run_id=run_id, job_id=job_id))

    def _materialise_day(
        self, config: FeatureSetConfig, ds: date, *, run_id: str | None, job_id: str | None
    ) -> DayResult:
        key = partition_key(config, ds)
        run_id = run_id or uuid.uuid4().hex
        day = functools.partial(DayResult, ds=ds, feature_set=key.feature_set, version=key.version)
        seconds: dict[str, float] = {}
        clock = time.perf_counter()
        try:
            rendered = render_feature_set(config, ds, macros_dir=self.macros_dir, sql_root=self.sql_root)
        except TemplateError as error:
            return day(status="failed", reason=str(error), failures=error.as_dicts())
        seconds["render"], clock = time.perf_counter() - clock, time.perf_counter()
        try:
            begin_day = getattr(self.engine, "begin_day", None)
            if begin_day is not None:  # a remote engine (EMR) needs the day's identity
                begin_day(job_id or run_id, key.feature_set, key.version, ds)
            source_columns = self._register_sources(config, rendered)
            steps = [ModelStep(m.name, m.view, m.sql) for m in rendered.models]
            output = self.engine.run_models(steps, rendered.output, output_columns(config))
        except EngineError as error:
            return day(status="failed", reason=str(error), seconds=seconds)
        if output.dropped_columns:
            log.info(
                "%s %s: undeclared output columns dropped: %s", key.feature_set, ds, output.dropped_columns
            )
        seconds["compute"], clock = time.perf_counter() - clock, time.perf_counter()
        report = self.validator.validate(output.table, checks_for(config.spec))
        statistics = column_statistics(output.table)
        seconds["validate"], clock = time.perf_counter() - clock, time.perf_counter()
        lineage = self._lineage(config, rendered, source_columns, output.table.column_names)
        seconds["lineage"], clock = time.perf_counter() - clock, time.perf_counter()
        content = PartitionContent(output.table, report.to_dict(), statistics)
        common = {
            "feature_set": key.feature_set,
            "version": key.version,
            "ds": ds.isoformat(),
            "config_hash": config_hash(config),
            "run_id": run_id,
            "written_at": datetime.now(UTC).isoformat(),
        }
        columns = list(output.table.column_names)
        if report.success:
            marker = {
                **common,
                "rows": output.rows,
                "schema": table_schema(output.table),
                "validation": report.summary(),
                "lineage": lineage,
                "sql_hashes": rendered.sql_hashes,
                # join metadata for readers: the trainer keeps these out of a model's inputs
                "entity": list(config.spec.entity),
                "timestamp": config.spec.timestamp,
            }
            uri = self.store.write_good(key, content, marker, run_id)
            seconds["write"] = time.perf_counter() - clock
            return day(
                status="good",
                rows=output.rows,
                columns=columns,
                uri=uri,
                validation=report.summary(),
                lineage=lineage,
                seconds=seconds,
            )
        failures = [f.to_dict() for f in report.failures()]
        reason = failure_reason(report.failures(), len(report.results))
        failure = {**common, "rows": output.rows, "reason": reason, "failing_expectations": failures}
        quarantine_uri = self.store.write_quarantine(key, content, failure, run_id)
        seconds["write"] = time.perf_counter() - clock
        return day(
            status="quarantined",
            rows=output.rows,
            columns=columns,
            quarantine_uri=quarantine_uri,
            validation=report.summary(),
            failures=failures,
            lineage=lineage,
            reason=reason,
            seconds=seconds,
        )

    def materialise_range(
        self,
        config: FeatureSetConfig,
        start: date,
        end: date,
        *,
        force: bool = False,
        job_id: str | None = None,
    ) -> Iterator[DayResult]:
        """Materialise each day of ``start..end`` in order, yielding each day's result as it ends.

        A day that is already good with the same config hash is not recomputed (its result comes
        from its ``_SUCCESS`` marker, ``skipped=True``), so a range interrupted by a crash resumes
        where it stopped.

        Args:
            config: the validated feature set.
            start: first day.
            end: last day (inclusive).
            force: recompute good days too.
            job_id: the request's job id, passed on to each day.

        Yields:
            One result per day, in date order.
        """
        digest = config_hash(config)
        for ds in days_between(start, end):
            marker = None if force else self.store.good_marker(partition_key(config, ds))
            if marker is not None and marker.get("config_hash") == digest:
                yield skipped_result(config, ds, marker, self.store)
                continue
            try:
                yield self.materialise_day(config, ds, job_id=job_id)
            except Exception as error:  # a store or validator failure ends this day, not the range
                log.exception("materialising %s for %s failed", config.metadata.name, ds)
                key = partition_key(config, ds)
                failed = DayResult(
                    ds=ds,
                    status="failed",
                    feature_set=key.feature_set,
                    version=key.version,
                    reason=f"{type(error).__name__}: {error}",
                )
                yield self._record(failed)

    def _record(self, result: DayResult) -> DayResult:
        """Emit the day's metrics: stage times, the partition by status, rows written, failed expectations."""
        tag = f"{result.feature_set}@{result.version}"
        for stage, seconds in result.seconds.items():
            self.metrics.emit(catalog.STAGE_DURATION, seconds * 1000, kind="materialise", stage=stage)
        # a day that computed nothing (a SQL error, a missing source) counts as failed too: no good partition
        status = "good" if result.good else "failed"
        self.metrics.emit(catalog.PARTITIONS_MATERIALISED, feature_set=tag, status=status)
        if result.good:
            self.metrics.emit(catalog.ROWS_MATERIALISED, result.rows, feature_set=tag)
        elif result.status == "quarantined":
            self.metrics.emit(catalog.VALIDATION_FAILURES, len(result.failures), feature_set=tag)
        return result

    def _register_sources(
        self, config: FeatureSetConfig, rendered: RenderedFeatureSet
    ) -> dict[str, list[str]]:
        columns: dict[str, list[str]] = {}
        for name in rendered.sources:
            source = config.spec.sources[name]
            location, partitioned = resolve_location(source, rendered.ds, self.data_root)
            table = SourceTable(
                name=name,
                view=source_view(name),
                format=source.format.value,
                location=location,
                partitioned=partitioned,
                options=_reader_options(source.options),
            )
            columns[name] = self.engine.register_source(table)
        return columns

    def _lineage(
        self,
        config: FeatureSetConfig,
        rendered: RenderedFeatureSet,
        source_columns: Mapping[str, list[str]],
        output: list[str],
    ) -> dict[str, list[str]]:
        declared = {f.name: list(f.source_columns) for f in config.spec.features}
        try:
            derived = column_lineage(rendered, source_columns)
        except Exception:  # lineage is a by-product: a parser gap must not fail the day
            log.exception(
                "column lineage failed for %s %s; using the declared source_columns",
                config.metadata.name,
                rendered.ds,
            )
            derived = {}
        return {name: derived.get(name) or declared.get(name, []) for name in output}


def skipped_result(
    config: FeatureSetConfig, ds: date, marker: Mapping[str, Any], store: PartitionStore
) -> DayResult:
    """A good day's result rebuilt from its ``_SUCCESS`` marker."""
    key = partition_key(config, ds)
    return DayResult(
        ds=ds,
        status="good",
        feature_set=key.feature_set,
        version=key.version,
        rows=int(marker.get("rows", 0)),
        columns=[c["name"] for c in marker.get("schema", [])],
        uri=store.partition_uri(key),
        validation=dict(marker.get("validation", {})),
        lineage={k: list(v) for k, v in marker.get("lineage", {}).items()},
        skipped=True,
    )


def failure_reason(failures: list[CheckResult], evaluated: int) -> str:
    """``validation failed: 1 of 12 expectations: <first failure with examples>; ...``."""
    parts = []
    for failure in failures:
        text = f"{failure.check.origin or failure.check.kind}: {failure.check.describe()}"
        if failure.error:
            text += f" could not be evaluated ({failure.error})"
        elif failure.unexpected_count is not None:
            text += f" — {failure.unexpected_count} unexpected, e.g. {failure.examples[:5]}"
        elif failure.observed is not None:
            text += f" — observed {failure.observed}"
        parts.append(text)
    return f"validation failed: {len(failures)} of {evaluated} expectations: " + "; ".join(parts)


def _reader_options(options: Mapping[str, Any]) -> dict[str, str]:
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in options.items()}
