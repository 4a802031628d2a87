"""``EmrSqlEngine``: the :class:`~pfactory.materialiser.engine.SqlEngine` that runs a day on EMR on EKS.

The platform side of a day is the same as with the local engine: the service registers the
sources, runs the models, then validates the returned Arrow table and writes the partition
atomically itself. Only the SQL runs remotely:

* :meth:`EmrSqlEngine.register_source` records the source's root (EMR reads ``s3://`` natively) and
  reads its schema with pyarrow's S3FileSystem, so column lineage still has the source columns.
* :meth:`EmrSqlEngine.run_models` renders a :class:`~pfactory.materialiser.adapters.emr.RenderedJob`,
  submits it with :class:`~pfactory.materialiser.adapters.emr.EmrOnEksJobRunner`, waits for the run,
  reads the Parquet the job staged (no ``_SUCCESS``: only the platform marks a partition good) back
  into Arrow and casts it to the declared dtypes.

The submission needs the day's identity (job id, feature set, version, ds): the service calls
:meth:`EmrSqlEngine.begin_day` before registering a day's sources. The job id makes the submission
idempotent: a redelivered request reattaches to the run already going instead of starting another.

Sync/async bridge: the runner is asyncio (aioboto3) while the ``SqlEngine`` role is synchronous and
the worker calls it from ``asyncio.to_thread`` — a different pool thread from one day to the next.
aioboto3 clients belong to the loop that opened them, so the engine owns one private event loop
running in a daemon thread; every runner call is handed to it with
:func:`asyncio.run_coroutine_threadsafe` and the calling thread blocks on the result. The worker's
own loop is never blocked (it is not the caller's thread), the clients are reused across days, and
:meth:`EmrSqlEngine.close` closes them on that loop before stopping it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.dataset as pa_ds
from pyarrow import fs

from pfactory.materialiser.adapters.arrow_io import arrow_format, s3_filesystem
from pfactory.materialiser.adapters.emr import (
    EmrJobError,
    EmrOnEksJobRunner,
    EmrOnEksSettings,
    JobModel,
    JobSource,
    RenderedJob,
)
from pfactory.materialiser.engine import EngineError, EngineOutput, ModelStep, OutputColumn, SourceTable

log = logging.getLogger("pfactory.materialiser.emr")

ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
"""Declared feature dtype → the Arrow type the local engine's ``toArrow`` yields for its Spark cast."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class DayContext:
    """Which request and day the next ``run_models`` belongs to (names and dedupes the EMR run)."""

    job_id: str
    feature_set: str
    version: str
    ds: date


class EmrSqlEngine:
    """Runs a day's rendered models as one EMR on EKS job and reads the staged output back."""

    def __init__(
        self,
        settings: EmrOnEksSettings,
        *,
        runner_factory: Callable[[EmrOnEksSettings], EmrOnEksJobRunner] = EmrOnEksJobRunner,
    ) -> None:
        self.settings = settings
        self._runner_factory = runner_factory
        self._runner: EmrOnEksJobRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._day: DayContext | None = None
        self._sources: dict[str, SourceTable] = {}
        self.filesystem = s3_filesystem(settings.s3_endpoint_url, settings.region)
        self.last_run_id: str | None = None
        """The EMR job run id of the latest ``run_models`` (for logs and tests)."""

    # ------------------------------------------------------------------ the day

    def begin_day(self, job_id: str, feature_set: str, version: str, ds: date) -> None:
        """Start a day: forget the previous day's sources and name the next submission.

        Args:
            job_id: the request's job id (a redelivery of the same request reattaches to its run).
            feature_set: the feature-set name.
            version: the feature-set version.
            ds: the run date.
        """
        with self._lock:
            self._day = DayContext(job_id, feature_set, version, ds)
            self._sources = {}

    def register_source(self, source: SourceTable) -> list[str]:
        """Record ``source`` for the job and return its columns (partition columns last, as Spark)."""
        if not source.location.startswith("s3://"):
            raise EngineError(
                f"source '{source.name}' is at {source.location}, which EMR cannot read: the EMR "
                "engine reads s3:// sources only (set PF_MATERIALISER_DATA_ROOT to an s3:// prefix)"
            )
        path = source.location.removeprefix("s3://").rstrip("/")
        try:
            info = self.filesystem.get_file_info(path)
            if info.type == fs.FileType.NotFound:
                raise EngineError(f"source '{source.name}' has no data: {source.location} does not exist")
            dataset = pa_ds.dataset(
                path,
                filesystem=self.filesystem,
                format=arrow_format(source, csv_header_default=True),  # as the entry script reads CSV
                partitioning="hive" if source.partitioned else None,
            )
            columns = list(dataset.schema.names)
        except EngineError:
            raise
        except (OSError, pa.ArrowException) as error:
            raise EngineError(
                f"source '{source.name}' could not be read from {source.location}: {error}"
            ) from error
        with self._lock:
            self._sources[source.name] = source
        return columns

    def run_models(
        self, steps: Sequence[ModelStep], output: str, columns: Sequence[OutputColumn]
    ) -> EngineOutput:
        """Run ``steps`` as one EMR job, wait for it, and read its output back cast to ``columns``.

        Raises:
            EngineError: no ``begin_day``, an unknown output, the run failed, was cancelled or timed
                out (the message carries EMR's reason and where the logs are), or its output is
                missing or unreadable.
        """
        with self._lock:
            if self._day is None:
                raise EngineError("the EMR engine needs begin_day(job_id, feature_set, version, ds) first")
            if output not in {s.name for s in steps}:
                raise EngineError(
                    f"output model '{output}' is not among the rendered models {sorted(s.name for s in steps)}"
                )
            job = RenderedJob(
                job_id=self._day.job_id,
                feature_set=self._day.feature_set,
                version=self._day.version,
                ds=self._day.ds,
                # steps come in execution order; without refs the entry script keeps that order
                models=tuple(JobModel(s.name, s.sql, view=s.view) for s in steps),
                sources={
                    name: JobSource(root=s.location, format=s.format, options=dict(s.options), view=s.view)
                    for name, s in self._sources.items()
                },
                output=output,
                columns=tuple((c.name, c.dtype) for c in columns),
            )
            runner = self._ensure_runner()
            run_id: str | None = None
            try:
                run_id = self._call(runner.submit(job))
                self.last_run_id = run_id
                log.info(
                    "%s %s: EMR job run %s submitted (%s)",
                    job.feature_set,
                    job.ds,
                    run_id,
                    runner.job_uri(job),
                )
                self._call(runner.wait(run_id))
            except EmrJobError as error:
                logs = runner.logs_uri(run_id) if run_id else None
                message = str(error)
                if logs and logs not in message:
                    message += f"; logs under {logs}"
                raise EngineError(message) from error
            table = self._read_output(runner.output_location(job), run_id)
        return _cast(table, columns)

    def close(self) -> None:
        """Close the runner's clients on the private loop, then stop the loop and its thread."""
        with self._lock:
            loop, thread, runner = self._loop, self._thread, self._runner
            self._loop = self._thread = self._runner = None
            if loop is None:
                return
            try:
                if runner is not None:
                    asyncio.run_coroutine_threadsafe(runner.close(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                if thread is not None:
                    thread.join(timeout=30)
                loop.close()

    # ------------------------------------------------------------------ internals

    def _ensure_runner(self) -> EmrOnEksJobRunner:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="pf-emr-engine-loop", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        if self._runner is None:
            # built on the loop: the runner's asyncio.Lock and clients then belong to it
            self._runner = self._call(_build(self._runner_factory, self.settings))
        return self._runner

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _read_output(self, location: str, run_id: str | None) -> pa.Table:
        path = location.removeprefix("s3://").rstrip("/")
        try:
            dataset = pa_ds.dataset(path, filesystem=self.filesystem, format="parquet")
            if not dataset.files:
                raise EngineError(f"EMR job run {run_id} completed but wrote no Parquet under {location}")
            return dataset.to_table()
        except EngineError:
            raise
        except (OSError, pa.ArrowException) as error:
            raise EngineError(
                f"EMR job run {run_id} completed but its output under {location} could not be read: {error}"
            ) from error


async def _build(
    factory: Callable[[EmrOnEksSettings], EmrOnEksJobRunner], settings: EmrOnEksSettings
) -> EmrOnEksJobRunner:
    return factory(settings)


def _cast(table: pa.Table, columns: Sequence[OutputColumn]) -> EngineOutput:
    """Declared columns in order, cast like the local engine; undeclared ones are dropped."""
    present = set(table.column_names)
    declared = [c for c in columns if c.name in present]
    kept = {c.name for c in columns}
    dropped = tuple(name for name in table.column_names if name not in kept)
    arrays, fields = [], []
    for column in declared:
        array = table.column(column.name)
        if column.dtype is not None:
            try:
                array = array.cast(ARROW_TYPES[column.dtype])
            except pa.ArrowException as error:
                raise EngineError(
                    f"output column '{column.name}' cannot be cast to {column.dtype}: {error}"
                ) from error
        arrays.append(array)
        fields.append(pa.field(column.name, array.type))
    result = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    return EngineOutput(table=result, rows=result.num_rows, dropped_columns=dropped)
