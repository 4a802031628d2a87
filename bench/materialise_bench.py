"""Materialisation benchmark: the example credit feature set, ~1M raw rows per day, 7 days.

Runs the real ``Materialiser`` (local Spark engine, local partition store, Great Expectations
validation) day by day, and in the same run, with the same SparkSession, the same rendered SQL
executed directly in Spark and written with ``df.write.parquet`` (no validation, no markers, no
lineage): the bare baseline. Prints raw rows/s, output rows/s, the time per platform phase and the
split between Spark execution and platform overhead, and the platform/bare ratio.

    SPARK_LOCAL_IP=127.0.0.1 uv run python bench/materialise_bench.py            # full: 7 days x ~1M raw rows
    SPARK_LOCAL_IP=127.0.0.1 uv run python bench/materialise_bench.py --days 2 --raw-rows-per-day 50000

Raw rows of a day = applicants + bureau accounts + transactions written for that day. The
generator picks ``applicants_per_day`` from a calibration draw so the total is close to the target.
Data generation is timed separately and is not part of any throughput figure. One small warm-up
day (a tenth of a day's applicants, its own data and store) runs first through both paths, so the
Spark JVM / session start, the first query compilations and the GX context creation are excluded
from both measurements.

Note: the feature set's ``late`` CTE reads the transactions of the 90 days up to ``ds``, so day k of
the run also scans the transactions of the earlier k-1 days; the "scanned" figures count those.

Anchor (issue #4, this machine): Feast 0.67 ``materialize`` of one day of 1M rows (file offline
store, SQLite online store) takes 21.6 s, 46k rows/s.
Target: >= 10x Feast's rows/s (>= 460k raw rows/s), validation included.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "examples" / "credit_features.yaml"
GENERATOR_PATH = ROOT / "examples" / "credit" / "generate_data.py"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from pfactory.contracts.configs.featureset import FeatureSetConfig  # noqa: E402
from pfactory.contracts.loader import load_config  # noqa: E402
from pfactory.materialiser.adapters.gx import GxPartitionValidator  # noqa: E402
from pfactory.materialiser.adapters.partitions import build_partition_store  # noqa: E402
from pfactory.materialiser.adapters.spark import LocalSparkEngine, SparkEngineSettings  # noqa: E402
from pfactory.materialiser.engine import resolve_location  # noqa: E402
from pfactory.materialiser.service import DayResult, Materialiser  # noqa: E402
from pfactory.materialiser.templates import render_feature_set  # noqa: E402
from pfactory.materialiser.validation import Check, ValidationReport  # noqa: E402

FEAST_SECONDS = 21.6
FEAST_ROWS = 1_000_000
FEAST_ROWS_PER_S = 46_000
TARGET_FACTOR = 10
TARGET_ROWS_PER_S = TARGET_FACTOR * FEAST_ROWS_PER_S
START = date(2024, 1, 1)
WARMUP_DAY = date(2023, 6, 1)
WARMUP_MIN_APPLICANTS = 2_000

PHASES = ("render", "engine", "validate_gx", "statistics", "lineage", "write", "other")
PHASE_LABELS = {
    "render": "render (Jinja templates)",
    "engine": "Spark execution (read, SQL, collect to Arrow)",
    "validate_gx": "validation (GX on pandas)",
    "statistics": "column statistics (pyarrow)",
    "lineage": "lineage (sqlglot)",
    "write": "write (Parquet, reports, marker, rename)",
    "other": "other (hashing, checks, bookkeeping)",
}


def load_generator() -> ModuleType:
    """``examples/credit/generate_data.py`` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("credit_generate_data", GENERATOR_PATH)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {GENERATOR_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


class TimedValidator:
    """Delegates to the GX validator and records how long GX itself took (the rest of the
    service's ``validate`` phase is the pyarrow column statistics)."""

    def __init__(self, inner: GxPartitionValidator) -> None:
        self.inner = inner
        self.last = 0.0

    def validate(self, table: pa.Table, checks: Sequence[Check]) -> ValidationReport:
        began = time.perf_counter()
        try:
            return self.inner.validate(table, checks)
        finally:
            self.last = time.perf_counter() - began


def time_lineage(materialiser: Materialiser) -> list[float]:
    """Wrap the instance's lineage step (inside the service's ``write`` phase) to time it."""
    recorded: list[float] = []
    inner = materialiser._lineage

    def timed(*args: Any, **kwargs: Any) -> dict[str, list[str]]:
        began = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            recorded.append(time.perf_counter() - began)

    materialiser._lineage = timed  # type: ignore[method-assign]
    return recorded


@dataclass
class DayRow:
    """One measured day."""

    ds: date
    raw_rows: int
    scanned_rows: int
    output_rows: int = 0
    platform_wall: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    bare_wall: float = 0.0
    bare_rows: int = 0


def generate_days(
    gen: ModuleType, raw: Path, days: Sequence[date], applicants: int, seed: int
) -> dict[date, tuple[int, int, int]]:
    """Generate each day (its own ``generate`` call, so per-day counts are known)."""
    counts = {}
    for ds in days:
        summary = gen.generate(raw, ds, 1, applicants, seed, progress_every=0)
        counts[ds] = (summary.applicants, summary.bureau_rows, summary.transaction_rows)
    return counts


def applicants_for(gen: ModuleType, raw_rows: int, seed: int) -> tuple[int, float]:
    """Applicants per day giving ~``raw_rows`` raw rows, from an in-memory calibration draw."""
    sample = 20_000
    day = gen.generate_day(START - timedelta(days=1), sample, seed)
    rows = sample + len(day.bureau["applicant_id"]) + len(day.transactions["applicant_id"])
    per_applicant = rows / sample
    return max(1, round(raw_rows / per_applicant)), per_applicant


def run_platform(materialiser: Materialiser, config: FeatureSetConfig, ds: date) -> tuple[DayResult, float]:
    began = time.perf_counter()
    result = materialiser.materialise_day(config, ds)
    wall = time.perf_counter() - began
    if not result.good:
        raise SystemExit(f"platform run of {ds} ended {result.status}: {result.reason}")
    return result, wall


def run_bare(
    engine: LocalSparkEngine, config: FeatureSetConfig, ds: date, data_root: str, out: Path
) -> tuple[int, float]:
    """The same rendered SQL, run straight in the session, written with ``df.write.parquet``."""
    rendered = render_feature_set(config, ds)  # not timed: only the Spark work is the baseline
    spark = engine.session
    began = time.perf_counter()
    for name in rendered.sources:
        source = config.spec.sources[name]
        location, _ = resolve_location(source, ds, data_root)
        options = {"inferSchema": "true"} if source.format.value == "csv" else {}
        options.update(
            {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in source.options.items()}
        )
        spark.read.format(source.format.value).options(**options).load(location).createOrReplaceTempView(
            f"src_{name}"
        )
    frame = None
    for model in rendered.models:
        frame = spark.sql(model.sql)
        frame.createOrReplaceTempView(model.view)
    assert frame is not None and rendered.models[-1].name == rendered.output
    target = out / f"ds={ds.isoformat()}"
    frame.write.mode("overwrite").parquet(str(target))
    wall = time.perf_counter() - began
    rows = spark.read.parquet(str(target)).count()  # a check, not timed
    return rows, wall


def phases_of(result: DayResult, gx_seconds: float, lineage_seconds: float, wall: float) -> dict[str, float]:
    s = result.seconds
    phases = {
        "render": s.get("render", 0.0),
        "engine": s.get("engine", 0.0),
        "validate_gx": gx_seconds,
        "statistics": max(0.0, s.get("validate", 0.0) - gx_seconds),
        "lineage": lineage_seconds,
        "write": max(0.0, s.get("write", 0.0) - lineage_seconds),
    }
    phases["other"] = max(0.0, wall - sum(phases.values()))
    return phases


def rate(rows: float, seconds: float) -> str:
    return f"{rows / seconds:,.0f}/s" if seconds > 0 else "n/a"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if whole > 0 else "  n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--days", type=int, default=7, help="days to materialise (default 7)")
    parser.add_argument(
        "--raw-rows-per-day",
        type=int,
        default=1_000_000,
        help="target raw rows per day: applicants + bureau accounts + transactions (default 1,000,000)",
    )
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (raw data and outputs)")
    parser.add_argument(
        "--spark-master", default="local[2]", help="Spark master (default local[2], as the service)"
    )
    parser.add_argument(
        "--shuffle-partitions",
        type=int,
        default=4,
        help="spark.sql.shuffle.partitions (default 4, as the service)",
    )
    args = parser.parse_args(argv)
    if args.days < 1 or args.raw_rows_per_day < 100:
        parser.error("--days must be >= 1 and --raw-rows-per-day >= 100")
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("py4j", "great_expectations", "pfactory.materialiser.lineage"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    def say(line: str = "") -> None:
        print(line, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="pf-materialise-bench-"))
    try:
        config = load_config(CONFIG_PATH, expect=FeatureSetConfig)
        gen = load_generator()
        days = [START + timedelta(days=n) for n in range(args.days)]
        applicants, per_applicant = applicants_for(gen, args.raw_rows_per_day, args.seed)
        say(
            f"materialise bench: {config.metadata.name} v{config.spec.version}, {args.days} day(s) from {START}"
        )
        say(f"  target {args.raw_rows_per_day:,} raw rows/day → {applicants:,} applicants/day")
        say(f"  ({per_applicant:.2f} raw rows per applicant: applicant + bureau accounts + transactions)")
        say(f"  Spark {args.spark_master}, shuffle partitions {args.shuffle_partitions}; temp dir {tmp}")

        # ---------------------------------------------------------------- data (not measured)
        began = time.perf_counter()
        raw, warm_raw = tmp / "data" / "raw", tmp / "warmup" / "data" / "raw"
        counts = generate_days(gen, raw, days, applicants, args.seed)
        warm_applicants = max(WARMUP_MIN_APPLICANTS, applicants // 10)  # a tenth of a day
        generate_days(gen, warm_raw, [WARMUP_DAY], warm_applicants, args.seed)
        generation = time.perf_counter() - began
        total_raw = sum(sum(c) for c in counts.values())
        say(f"generated {total_raw:,} raw rows in {generation:.1f}s (not part of any figure below)")

        # ---------------------------------------------------------------- wiring
        engine = LocalSparkEngine(
            SparkEngineSettings(master=args.spark_master, shuffle_partitions=args.shuffle_partitions)
        )
        validator = TimedValidator(GxPartitionValidator())
        materialiser = Materialiser(
            engine, build_partition_store(str(tmp / "store")), validator, data_root=str(tmp)
        )
        lineage_times = time_lineage(materialiser)
        warm = Materialiser(
            engine,
            build_partition_store(str(tmp / "warmup" / "store")),
            validator,
            data_root=str(tmp / "warmup"),
        )

        # ---------------------------------------------------------------- warm-up (excluded)
        began = time.perf_counter()
        run_platform(warm, config, WARMUP_DAY)
        run_bare(engine, config, WARMUP_DAY, str(tmp / "warmup"), tmp / "warmup" / "bare")
        say(
            f"warm-up: 1 day of {warm_applicants:,} applicants through both paths in "
            f"{time.perf_counter() - began:.1f}s (Spark start, first compilations, GX context; excluded)"
        )

        # ---------------------------------------------------------------- measured days
        rows: list[DayRow] = []
        scanned_tx = 0
        for index, ds in enumerate(days):
            n_app, n_bureau, n_tx = counts[ds]
            scanned_tx += n_tx  # the late CTE reads transactions of ds-90 .. ds
            row = DayRow(ds, n_app + n_bureau + n_tx, n_app + n_bureau + scanned_tx)
            # alternate which path goes first, so neither always gets the warmer caches
            order = ("platform", "bare") if index % 2 == 0 else ("bare", "platform")
            for path in order:
                if path == "platform":
                    before = len(lineage_times)
                    result, wall = run_platform(materialiser, config, ds)
                    lineage = sum(lineage_times[before:])
                    row.output_rows, row.platform_wall = result.rows, wall
                    row.phases = phases_of(result, validator.last, lineage, wall)
                else:
                    row.bare_rows, row.bare_wall = run_bare(engine, config, ds, str(tmp), tmp / "bare")
            if row.bare_rows != row.output_rows:
                raise SystemExit(f"{ds}: bare wrote {row.bare_rows} rows, the platform {row.output_rows}")
            rows.append(row)
            p = row.phases
            say(
                f"day {index + 1}/{len(days)} {ds}: {row.raw_rows:,} raw rows ({row.scanned_rows:,} scanned) "
                f"→ {row.output_rows:,} feature rows | platform {row.platform_wall:.2f}s "
                f"(spark {p['engine']:.2f}, gx {p['validate_gx']:.2f}, stats {p['statistics']:.2f}, "
                f"lineage {p['lineage']:.2f}, write {p['write']:.2f}, render {p['render']:.3f}) "
                f"| bare {row.bare_wall:.2f}s"
            )
        engine.close()

        # ---------------------------------------------------------------- report
        raw_rows = sum(r.raw_rows for r in rows)
        scanned = sum(r.scanned_rows for r in rows)
        out_rows = sum(r.output_rows for r in rows)
        wall = sum(r.platform_wall for r in rows)
        bare = sum(r.bare_wall for r in rows)
        totals = {k: sum(r.phases[k] for r in rows) for k in PHASES}
        spark = totals["engine"]
        overhead = wall - spark
        platform_rate = raw_rows / wall
        bare_rate = raw_rows / bare

        say()
        say(
            f"== platform: Materialiser (Spark + GX validation + partition store + lineage), {len(rows)} day(s)"
        )
        say(f"  wall                 {wall:8.2f}s   ({wall / len(rows):.2f}s/day)")
        say(f"  raw rows             {raw_rows:>12,}   {rate(raw_rows, wall)}")
        say(
            f"  raw rows scanned     {scanned:>12,}   {rate(scanned, wall)}  (incl. the 90-day transaction lookback)"
        )
        say(f"  output rows          {out_rows:>12,}   {rate(out_rows, wall)}")
        say("  where the time goes:")
        for key in PHASES:
            say(f"    {PHASE_LABELS[key]:<48} {totals[key]:8.2f}s  {pct(totals[key], wall)}")
        say(f"  Spark execution      {spark:8.2f}s  {pct(spark, wall)}")
        say(
            f"  platform overhead    {overhead:8.2f}s  {pct(overhead, wall)}  (everything but Spark execution)"
        )
        if spark > 0:
            say(
                f"  GX validation alone: {pct(totals['validate_gx'], wall).strip()} of the wall, "
                f"{totals['validate_gx'] / spark:.2f}x the Spark execution time"
            )
        say()
        say(
            "== bare: the same rendered SQL in the same SparkSession, df.write.mode('overwrite').parquet, no checks"
        )
        say(f"  wall                 {bare:8.2f}s   ({bare / len(rows):.2f}s/day)")
        say(f"  raw rows             {raw_rows:>12,}   {rate(raw_rows, bare)}")
        say(f"  output rows          {out_rows:>12,}   {rate(out_rows, bare)}")
        say(
            f"  platform / bare: {platform_rate / bare_rate:.2f}x the bare rows/s "
            f"(platform takes {wall / bare:.2f}x the bare time)"
        )
        say()
        say(
            f"== anchor: Feast 0.67 materialize, one day of {FEAST_ROWS:,} rows = {FEAST_SECONDS}s, "
            f"{FEAST_ROWS_PER_S:,} rows/s"
        )
        say(
            f"   platform (validation included): {platform_rate:,.0f} raw rows/s = "
            f"{platform_rate / FEAST_ROWS_PER_S:.1f}x Feast"
        )
        met = platform_rate >= TARGET_ROWS_PER_S
        say(
            f"   target >= {TARGET_FACTOR}x Feast (>= {TARGET_ROWS_PER_S:,} raw rows/s): "
            f"{'met' if met else 'NOT met'}"
        )
        if args.raw_rows_per_day < 1_000_000 or args.days < 7:
            say(
                "   (reduced scale: the target is defined for 7 days x 1M raw rows; run without flags for it)"
            )
        say(f"   data generation took {generation:.1f}s (excluded)")
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
