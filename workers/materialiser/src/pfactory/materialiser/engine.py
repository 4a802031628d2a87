"""The ``SqlEngine`` role: run one day's rendered SQL models and hand back the output table.

Domain code only: no Spark import here. The local adapter is :mod:`pfactory.materialiser.adapters.spark`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import pyarrow as pa

from pfactory.contracts.configs.featureset import Source


class EngineError(RuntimeError):
    """A day could not be computed: a source is missing, or the SQL failed to analyse or run."""


@dataclass(frozen=True)
class SourceTable:
    """One source as the engine reads it for a day.

    ``location`` is resolved (absolute, or an ``s3://`` URI). For a partitioned source it is the
    partition *root*: the ``ds=...`` segment is removed and the engine discovers ``ds`` as a column
    (Hive partitioning) that the SQL filters on, so a model may also read a window of past days.
    """

    name: str
    view: str
    format: str
    location: str
    partitioned: bool
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelStep:
    """One rendered SQL model, registered as the temp view ``view`` for the steps after it."""

    name: str
    view: str
    sql: str


@dataclass(frozen=True)
class OutputColumn:
    """A column of the output table with its declared logical dtype (None: keep as computed)."""

    name: str
    dtype: str | None


@dataclass(frozen=True)
class EngineOutput:
    """The output model's rows for the day."""

    table: pa.Table
    rows: int
    dropped_columns: tuple[str, ...] = ()


class SqlEngine(Protocol):
    """Runs a feature set's rendered SQL models for one day."""

    def register_source(self, source: SourceTable) -> list[str]:
        """Make a source readable by the models under ``source.view``.

        Args:
            source: where and how to read it.

        Returns:
            The source's column names (partition columns included), for lineage.

        Raises:
            EngineError: the source cannot be read (missing path, unreadable files).
        """
        ...

    def run_models(
        self, steps: Sequence[ModelStep], output: str, columns: Sequence[OutputColumn]
    ) -> EngineOutput:
        """Run ``steps`` in order as temp views and collect the ``output`` model.

        Args:
            steps: the rendered models in execution order.
            output: the name of the step whose rows are the feature table.
            columns: output columns in order, cast to their dtypes; columns the SQL did not
                produce are left out (validation reports them), undeclared ones are dropped.

        Returns:
            The output as an Arrow table with its row count.

        Raises:
            EngineError: a model failed to analyse or run.
        """
        ...

    def close(self) -> None:
        """Release the engine's resources (the warm session)."""
        ...


_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def resolve_location(source: Source, ds: date, data_root: str) -> tuple[str, bool]:
    """Where the engine reads ``source`` for ``ds``, and whether it is read as a partitioned root.

    A partitioned source (``partitioned_by`` set) is read from the path up to the first segment
    holding a placeholder, e.g. ``data/raw/x/ds={{ ds }}/`` → ``data/raw/x``. An unpartitioned one
    has ``{{ ds }}`` substituted. Relative paths resolve against ``data_root``.

    Args:
        source: the declared source.
        ds: the run date.
        data_root: a local folder or ``s3://`` prefix.

    Returns:
        ``(location, partitioned)``.

    Raises:
        EngineError: a placeholder other than ``ds``.
    """
    path = source.path
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(path)} - {"ds"})
    if unknown:
        raise EngineError(f"source path '{path}' uses unknown placeholder(s) {unknown}; only '{{{{ ds }}}}'")
    partitioned = source.partitioned_by is not None
    if partitioned:
        segments = path.rstrip("/").split("/")
        cut = next(
            (i for i, s in enumerate(segments) if "{{" in s or s.startswith(f"{source.partitioned_by}=")),
            None,
        )
        path = "/".join(segments[:cut]) if cut is not None else "/".join(segments)
    else:
        path = _PLACEHOLDER.sub(ds.isoformat(), path)
    return join_location(data_root, path), partitioned


def join_location(root: str, path: str) -> str:
    """``path`` if absolute or a URI, else ``root/path`` (local folders and ``s3://`` prefixes alike)."""
    if path.startswith("file://"):
        return path.removeprefix("file://")
    if path.startswith("s3a://"):
        return "s3://" + path.removeprefix("s3a://")
    if "://" in path or path.startswith("/"):
        return path
    return f"{root.rstrip('/')}/{path.removeprefix('./')}"
