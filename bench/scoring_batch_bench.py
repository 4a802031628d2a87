"""Batch scoring benchmark: one day of 10M rows x 30 features through the scorer against the inline limit.

Writes a synthetic validated feature partition (an ``entity_id`` and 30 float64 features, in the
materialiser's layout with its ``_SUCCESS`` marker) into a temp store, fits a small model on a 50k
sample and builds its drift reference with ``pfactory.features.drift.build_reference``. Then, each in
its own subprocess (so each phase's peak RSS is its own), on the same file and batch size:

* scorer: ``pfactory.scorer.batch.score_day`` (streamed read, ``predict_proba``, drift counted in the
  reference's buckets, labels attached, streamed write aside + rename);
* inline: the practical limit in one script, ``ParquetFile(pre_buffer=False).iter_batches`` ->
  ``to_pandas`` -> ``predict_proba`` -> ``ParquetWriter(use_dictionary=False).write_batch`` of the
  entity and the score. (``pre_buffer`` defaults to True, which reads ahead the whole file's column
  chunks and keeps them until the file is closed: peak RSS then grows with the partition, about its
  size on disk. ``use_dictionary`` defaults to True, which tries a dictionary of the distinct keys and
  scores in every row group before giving up: about half the arm's CPU at 64k-row batches.)

The ``LoadedModel`` is built directly from the fitted estimator and its reference (no registry: the
load is not part of batch throughput; the artifact fields of its record are placeholders). Data
generation and the fit are timed separately and are in neither figure. Memory: peak RSS (VmHWM) after
imports and the model load, after the first ~10% of the rows and at the end; "flat" means the peak
grew by less than ``FLAT_MB`` after that first tenth. CPU seconds (all threads of the phase) are printed
beside the wall time: on a shared machine the wall time also measures the neighbours.

    uv run python bench/scoring_batch_bench.py                         # 10M rows, LogisticRegression
    uv run python bench/scoring_batch_bench.py --rows 200000 --model hgb
    uv run python bench/scoring_batch_bench.py --rows 2000000 --repeat 3    # on a shared machine

Target (issue #6): the scorer at >= 80% of the inline limit's rows/s, memory flat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.libs.features.partitions import good_marker  # noqa: E402

from pfactory.features.layout import DATA_FILE, GOOD_MARKER, partition_path  # noqa: E402
from pfactory.registry.serialization import dump_model, load_model, sha256_hex  # noqa: E402

TARGET_RATIO = 0.80
FLAT_MB = 64.0
FEATURES = [f"f{i:02d}" for i in range(30)]
FEATURE_SET, FS_VERSION, MODEL_NAME = "bench_features", "1", "bench-batch"
DS = date(2024, 1, 1)
CHUNK = 500_000
SAMPLE = 50_000


def say(line: str = "") -> None:
    print(line, flush=True)


def memory_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------- data and model


def chunk(rng: np.random.Generator, start: int, n: int) -> pa.RecordBatch:
    """``n`` rows: correlated-ish features (a shared factor plus noise) and ids from ``start``."""
    shared = rng.standard_normal((n, 1))
    values = 0.5 * shared + rng.standard_normal((n, len(FEATURES)))
    columns = [pa.array(np.arange(start, start + n, dtype=np.int64))]
    columns += [pa.array(values[:, i]) for i in range(len(FEATURES))]
    return pa.record_batch(columns, names=["entity_id", *FEATURES])


def write_partition(store: Path, rows: int, seed: int) -> tuple[Path, np.ndarray]:
    """The day's ``part-0.parquet`` written chunk by chunk, then the ``_SUCCESS`` marker."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.5, len(FEATURES))
    folder = store / partition_path(FEATURE_SET, FS_VERSION, DS)
    folder.mkdir(parents=True)
    schema = chunk(rng, 0, 1).schema
    with pq.ParquetWriter(folder / DATA_FILE, schema) as writer:
        for start in range(0, rows, CHUNK):
            writer.write_batch(chunk(rng, start, min(CHUNK, rows - start)))
    marker = good_marker(FEATURE_SET, FS_VERSION, DS, schema.empty_table())
    marker["rows"] = rows
    (folder / GOOD_MARKER).write_text(json.dumps(marker))
    return folder / DATA_FILE, weights


def fit(data_file: Path, weights: np.ndarray, kind: str, seed: int) -> tuple[Any, dict[str, Any]]:
    """A model on the first ``SAMPLE`` rows (labels from a logistic of the features) and its reference."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    from pfactory.features.drift import build_reference

    batch = next(pq.ParquetFile(data_file).iter_batches(batch_size=SAMPLE, columns=FEATURES))
    frame = batch.to_pandas()
    rng = np.random.default_rng(seed + 1)
    labels = (rng.random(len(frame)) < 1 / (1 + np.exp(-(frame.to_numpy() @ weights)))).astype(int)
    model: Any = (
        HistGradientBoostingClassifier(max_iter=100, random_state=seed)
        if kind == "hgb"
        else LogisticRegression(max_iter=500)
    )
    model.fit(frame, labels)
    return model, build_reference(frame, model.predict_proba(frame)[:, 1])


# ---------------------------------------------------------------------------- the two phases


def phase(name: str, work: Path, batch_rows: int) -> dict[str, Any]:
    """Run one phase in this process; returns rows, seconds and memory readings."""
    data = (work / "model.skops").read_bytes()
    estimator = load_model(data, expected_sha256=sha256_hex(data), version_label="the bench model")
    reference = json.loads((work / "reference.json").read_text())
    source_path = Path((work / "data_file").read_text())
    total = pq.ParquetFile(source_path).metadata.num_rows
    if name == "scorer":  # imports and the LoadedModel before the clock starts
        from pfactory.scorer.batch import Store, score_day

        loaded = loaded_model(estimator, reference)
    marks: dict[str, float] = {"start": memory_mb("VmHWM")}

    def progress(done: int) -> None:
        if "tenth" not in marks and done >= total / 10:
            marks["tenth"] = memory_mb("VmHWM")

    began, cpu_began = time.perf_counter(), time.process_time()
    drift = None
    if name == "scorer":
        scored = score_day(loaded, DS, Store(str(work / "store")), batch_rows=batch_rows, on_batch=progress)
        rows, drift = scored.rows, drift_summary(scored.drift)
    else:
        rows = _inline(source_path, work / "inline.parquet", estimator, batch_rows, progress)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    marks.setdefault("tenth", marks["start"])
    hwm = {**marks, "end": memory_mb("VmHWM")}
    return {"rows": rows, "seconds": seconds, "cpu": cpu, "hwm": hwm, "drift": drift}


def loaded_model(estimator: Any, reference: dict[str, Any]) -> Any:
    """A ``LoadedModel`` for the estimator: a record with the entity in its config, no stored artifact."""
    from pfactory.contracts.events import FeatureSetRef
    from pfactory.registry.loading import LoadedModel
    from pfactory.registry.model import ArtifactInfo, Lineage, ModelVersion

    config = {"kind": "Model", "spec": {"task": "binary_classification", "labels": {"entity": "entity_id"}}}
    record = ModelVersion(
        model_name=MODEL_NAME,
        feature_set=FeatureSetRef(name=FEATURE_SET, version=FS_VERSION),
        version=1,
        allocation_key="bench",
        artifact=ArtifactInfo(uri="file:///bench/not-stored", sha256="0" * 64, size_bytes=0),
        framework="scikit-learn",
        config=config,
        lineage=Lineage(feature_set_version=FS_VERSION),
        created_by="bench",
    )
    return LoadedModel(record, estimator, reference, list(reference["signature"]))


def drift_summary(drift: dict[str, Any] | None) -> dict[str, Any]:
    """The report's headline: features counted, the largest PSI, the score's PSI, what drifted."""
    psi = (drift or {}).get("features", {}).values()
    return {
        "features": len(psi),
        "max_psi": round(max(psi, default=0.0), 5),
        "score_psi": (drift or {}).get("score"),
        "drifted": (drift or {}).get("drifted"),
    }


def _inline(source: Path, target: Path, estimator: Any, batch_rows: int, progress: Any) -> int:
    schema = pa.schema([pa.field("entity_id", pa.int64()), pa.field("score", pa.float64())])
    rows = 0
    # no dictionary pages: keys and scores are all distinct, and trying one in every row group costs
    # more than the rest of the write (the scorer writes them so too)
    with pq.ParquetWriter(target, schema, use_dictionary=False) as writer:
        # pre_buffer=False: the default pre-buffers the whole file's column chunks and holds them to the end
        for batch in pq.ParquetFile(source, pre_buffer=False).iter_batches(batch_size=batch_rows):
            scores = estimator.predict_proba(batch.select(FEATURES).to_pandas())[:, 1]
            writer.write_batch(pa.record_batch([batch.column("entity_id"), pa.array(scores)], schema=schema))
            rows += batch.num_rows
            progress(rows)
    return rows


def run_phase(name: str, work: Path, batch_rows: int) -> dict[str, Any]:
    """The phase in a fresh interpreter; its JSON result is the last line it prints."""
    command = [
        sys.executable,
        __file__,
        "--phase",
        name,
        "--work",
        str(work),
        "--batch-rows",
        str(batch_rows),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {name} phase failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------- main


def report(results: dict[str, dict[str, Any]], rows: int, growth: float) -> bool:
    """Print the table and verdicts; ``growth`` is the largest peak growth of any run (MB)."""
    say()
    say(
        f"{'':<10}{'rows/s':>14}{'seconds':>10}{'CPU s':>8}{'RSS start':>12}{'peak@10%':>11}"
        f"{'peak end':>11}{'growth':>9}"
    )
    for name, r in results.items():
        hwm = r["hwm"]
        say(
            f"{name:<10}{r['rows'] / r['seconds']:>14,.0f}{r['seconds']:>10.2f}{r['cpu']:>8.2f}{hwm['start']:>10.0f}MB"
            f"{hwm['tenth']:>9.0f}MB{hwm['end']:>9.0f}MB{hwm['end'] - hwm['tenth']:>7.0f}MB"
        )
    scorer, inline = results["scorer"], results["inline"]
    ratio = (scorer["rows"] / scorer["seconds"]) / (inline["rows"] / inline["seconds"])
    cpu_ratio = inline["cpu"] / scorer["cpu"]
    say(
        f"scorer drift report (same distribution as the reference, so nothing should drift): {scorer['drift']}"
    )
    say(
        f"scorer / inline limit: {ratio:.2f}  (target >= {TARGET_RATIO:.2f}: {'met' if ratio >= TARGET_RATIO else 'NOT met'})"
    )
    # on a shared machine wall time depends on the neighbours; CPU seconds (all threads) show the work
    say(f"CPU per row, inline / scorer: {cpu_ratio:.2f} (the scorer does drift and the extra columns on top)")
    flat = growth < FLAT_MB
    say(
        f"memory: peak grew {growth:.0f} MB after the first 10% of rows (flat: < {FLAT_MB:.0f} MB: {'yes' if flat else 'NO'})"
    )
    return ratio >= TARGET_RATIO and flat and all(r["rows"] == rows for r in results.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the day (default 10M)")
    parser.add_argument(
        "--batch-rows", type=int, default=65_536, help="rows per record batch (the scorer's default)"
    )
    parser.add_argument(
        "--model", choices=("lr", "hgb"), default="lr", help="LogisticRegression or HistGradientBoosting"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each phase, alternating; the fastest of each is compared (a shared machine's "
        "neighbours only ever slow a run down), memory is judged on the worst",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--phase", choices=("scorer", "inline"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        say(json.dumps(phase(args.phase, args.work, args.batch_rows)))
        return 0
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.rows < SAMPLE:
        parser.error(f"--rows must be at least {SAMPLE:,} (the model's training sample)")

    work = Path(tempfile.mkdtemp(prefix="pf-scoring-batch-bench-"))
    try:
        began = time.perf_counter()
        data_file, weights = write_partition(work / "store", args.rows, args.seed)
        size_mb = data_file.stat().st_size / 2**20
        written = time.perf_counter() - began
        began = time.perf_counter()
        estimator, reference = fit(data_file, weights, args.model, args.seed)
        (work / "model.skops").write_bytes(dump_model(estimator))
        (work / "reference.json").write_text(json.dumps(reference))
        (work / "data_file").write_text(str(data_file))
        say(
            f"batch scoring bench: {args.rows:,} rows x {len(FEATURES)} features ({size_mb:,.0f} MB Parquet, "
            f"written in {written:.1f}s), {type(estimator).__name__} fitted on {SAMPLE:,} rows in "
            f"{time.perf_counter() - began:.1f}s, batches of {args.batch_rows:,} rows; {work}"
        )
        say("LoadedModel built directly (no registry: loading is not part of batch throughput)")
        say(
            f"load average before measuring (1/5/15 min): {'/'.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
        )
        runs: dict[str, list[dict[str, Any]]] = {"scorer": [], "inline": []}
        for _ in range(args.repeat):
            for name in runs:  # one at a time, each in its own process, alternating
                runs[name].append(run_phase(name, work, args.batch_rows))
                say(f"  {name}: {runs[name][-1]['rows']:,} rows in {runs[name][-1]['seconds']:.2f}s")
        results = {name: min(done, key=lambda r: r["seconds"]) for name, done in runs.items()}
        growth = max(r["hwm"]["end"] - r["hwm"]["tenth"] for done in runs.values() for r in done)
        return 0 if report(results, args.rows, growth) else 1
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
