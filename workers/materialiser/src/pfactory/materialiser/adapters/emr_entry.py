"""The PySpark program a materialisation job runs on EMR on EKS: ``spark-submit emr_entry.py <spec-uri>``.

``EmrOnEksJobRunner`` uploads this file unchanged next to the job spec (JSON) and passes the spec's
URI as the only argument. The program reads every source from its root (Hive discovery turns the
``ds=...`` folders into a column the SQL filters on), runs the rendered SQL models as temp views in
ref order, casts the output model to its declared dtypes and writes it as Parquet to the target.

Self-contained on purpose: it imports only pyspark and the standard library, because it runs in
EMR's image, not ours. Everything but :func:`run_job` and :func:`main` is plain Python, so the spec
handling is tested without Spark.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - the real import is inside run_job/main
    from pyspark.sql import SparkSession

SPEC_VERSION = 1
"""Version of the job spec layout this program reads."""

SPARK_TYPES = {
    "int": "int",
    "long": "bigint",
    "float": "float",
    "double": "double",
    "string": "string",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp",
}
"""Declared feature dtype → Spark SQL type (the same casts as the local engine)."""

SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # Spark's own _SUCCESS file must not pass for the platform's "this partition is good" marker.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
}
"""Session settings the program sets itself, whatever the submit parameters say."""


class SpecError(ValueError):
    """The job spec is malformed: a missing field, an unknown ref or output, a ref cycle."""


@dataclass(frozen=True)
class SourceSpec:
    """One source: read ``format`` from ``root`` with ``options`` and register it as ``view``."""

    name: str
    view: str
    root: str
    format: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """One rendered SQL model, registered as ``view``; ``refs`` name the models it reads."""

    name: str
    view: str
    sql: str
    refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ColumnSpec:
    """An output column and its declared dtype (None: keep the computed type)."""

    name: str
    dtype: str | None


@dataclass(frozen=True)
class JobSpec:
    """Everything one day's job needs."""

    feature_set: str
    version: str
    ds: str
    models: tuple[ModelSpec, ...]
    sources: tuple[SourceSpec, ...]
    output: str
    target: str
    columns: tuple[ColumnSpec, ...] = ()


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def parse_spec(text: str) -> JobSpec:
    """Parse and check a job spec; the models come back in execution order.

    Raises:
        SpecError: the text is not a valid spec (the message names the field or model).
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"job spec is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise SpecError("job spec must be a JSON object")
    version = raw.get("spec_version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise SpecError(f"job spec version {version!r} is not supported (this program reads {SPEC_VERSION})")
    raw_models = raw.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise SpecError("job spec: 'models' must be a non-empty list of {name, sql}")
    models = []
    for i, item in enumerate(raw_models):
        if not isinstance(item, dict):
            raise SpecError(f"models[{i}] must be an object")
        name = _text(item, "name", f"models[{i}]")
        refs = item.get("refs", [])
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise SpecError(f"model '{name}': 'refs' must be a list of model names")
        view = item.get("view") or name
        models.append(ModelSpec(name, view, _text(item, "sql", f"model '{name}'"), tuple(refs)))
    raw_sources = raw.get("sources", {})
    if not isinstance(raw_sources, dict):
        raise SpecError("job spec: 'sources' must map a source name to {root, format, options}")
    sources = []
    for name, item in raw_sources.items():
        if not isinstance(item, dict):
            raise SpecError(f"source '{name}' must be an object")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            raise SpecError(f"source '{name}': 'options' must be an object")
        sources.append(
            SourceSpec(
                name=name,
                view=item.get("view") or name,
                root=_text(item, "root", f"source '{name}'"),
                format=item.get("format") or "parquet",
                options={str(k): str(v) for k, v in options.items()},
            )
        )
    output = _text(raw, "output", "job spec")
    if output not in {m.name for m in models}:
        raise SpecError(f"output model '{output}' is not among the models {sorted(m.name for m in models)}")
    columns = []
    for i, item in enumerate(raw.get("columns") or []):
        if not isinstance(item, dict):
            raise SpecError(f"columns[{i}] must be an object {{name, dtype}}")
        dtype = item.get("dtype")
        if dtype is not None and dtype not in SPARK_TYPES:
            raise SpecError(f"columns[{i}]: dtype {dtype!r} is not one of {sorted(SPARK_TYPES)}")
        columns.append(ColumnSpec(_text(item, "name", f"columns[{i}]"), dtype))
    return JobSpec(
        feature_set=_text(raw, "feature_set", "job spec"),
        version=str(raw.get("version", "")),
        ds=_text(raw, "ds", "job spec"),
        models=tuple(execution_order(models)),
        sources=tuple(sources),
        output=output,
        target=_text(raw, "target", "job spec"),
        columns=tuple(columns),
    )


def execution_order(models: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Order ``models`` so each runs after the models it refs; ties keep the given order.

    An already ordered list comes back unchanged.

    Raises:
        SpecError: two models share a name, a ref names no model, or refs form a cycle.
    """
    position: dict[str, int] = {}
    for i, model in enumerate(models):
        if model.name in position:
            raise SpecError(f"duplicate model name '{model.name}'")
        position[model.name] = i
    for model in models:
        unknown = [r for r in model.refs if r not in position]
        if unknown:
            raise SpecError(f"model '{model.name}' refs unknown model(s) {unknown}")
    done: set[str] = set()
    order: list[ModelSpec] = []
    while len(order) < len(models):
        ready = next((m for m in models if m.name not in done and all(r in done for r in m.refs)), None)
        if ready is None:
            stuck = [m.name for m in models if m.name not in done]
            raise SpecError(f"ref cycle among models {stuck}")
        order.append(ready)
        done.add(ready.name)
    return order


def read_spec_text(uri: str, spark: SparkSession | None = None) -> str:
    """Read the spec from a local path or ``file://`` URI, else (``s3://``) through Spark."""
    if "://" not in uri or uri.startswith("file://"):
        with open(uri.removeprefix("file://"), encoding="utf-8") as handle:
            return handle.read()
    if spark is None:
        raise SpecError(f"reading {uri} needs a Spark session")
    rows = spark.read.text(uri, wholetext=True).collect()
    if not rows:
        raise SpecError(f"job spec {uri} is empty")
    return str(rows[0][0])


def run_job(spark: SparkSession, spec: JobSpec) -> None:
    """Register the sources, run the models in order and write the output model as Parquet."""
    from pyspark.sql import functions as F

    for source in spec.sources:
        options = {"inferSchema": "true", "header": "true"} if source.format == "csv" else {}
        options.update(source.options)
        spark.read.format(source.format).options(**options).load(source.root).createOrReplaceTempView(
            source.view
        )
    frames = {}
    for model in spec.models:
        frame = spark.sql(model.sql)
        frame.createOrReplaceTempView(model.view)
        frames[model.name] = frame
    result = frames[spec.output]
    if spec.columns:
        present = set(result.columns)
        result = result.select(
            *[
                F.col(c.name).cast(SPARK_TYPES[c.dtype]).alias(c.name) if c.dtype else F.col(c.name)
                for c in spec.columns
                if c.name in present
            ]
        )
    result.write.mode("overwrite").parquet(spec.target)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``emr_entry.py <spec-uri>``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: emr_entry.py <job-spec-uri>", file=sys.stderr)
        return 2
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("pfactory-materialise")
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spec = parse_spec(read_spec_text(args[0], spark))
    print(
        f"pfactory: {spec.feature_set} v{spec.version} ds={spec.ds}: {[m.name for m in spec.models]} → {spec.target}"
    )
    run_job(spark, spec)
    print(f"pfactory: wrote {spec.output} to {spec.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
