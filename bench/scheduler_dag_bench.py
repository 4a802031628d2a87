"""Scheduler DAG benchmark: render, write and parse 1,000 generated scoring DAGs.

Renders varied scoring DAG specs with ``pfactory.scheduler.dags``, writes them with the
``LocalDagWriter`` (temporary file, fsync, rename), then parses the whole folder with one Airflow 3.3
``DagBag`` in the Airflow venv (built or reused by ``tests/workers/scheduler/airflow_env.py``) and
prints per-DAG figures. No assertion on times: figures are noisy on a shared machine.

    uv run python bench/scheduler_dag_bench.py              # 1,000 DAGs
    uv run python bench/scheduler_dag_bench.py --dags 200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.workers.scheduler.airflow_env import AirflowEnv  # noqa: E402

from pfactory.scheduler.adapters.dag_writer import LocalDagWriter  # noqa: E402
from pfactory.scheduler.dags import ScoringDagSpec, render_scoring_dag, scoring_dag_id  # noqa: E402

ZONES = ("UTC", "Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "America/Sao_Paulo")
CRONS = ("0 6 * * *", "30 3 * * *", "@daily", "0 */6 * * *", "15 7 * * 1-5", "0 0 1 * *")


def spec(i: int) -> ScoringDagSpec:
    """The i-th varied spec: names, versions, zones, crons, cards of different sizes."""
    model, fs, fs_version, version = f"model_{i % 97}", f"features_{i % 13}", str(1 + i % 5), 1 + i // 97
    card = f"# {model} v{version}\n\n" + "Scores applications; see the model card. \"'{{ ds }}'\"\n" * (
        1 + i % 40
    )
    return ScoringDagSpec(
        dag_id=scoring_dag_id(model, fs, fs_version, version),
        model_name=model,
        version=version,
        feature_set_name=fs,
        feature_set_version=fs_version,
        cron=CRONS[i % len(CRONS)],
        timezone=ZONES[i % len(ZONES)],
        start_date=date(2026, 1, 1) + timedelta(days=i % 300),
        owner=f"team-{i % 7}",
        doc_md=card,
        api_url="http://127.0.0.1:8000",
        tags=(f"team:{i % 7}",),
        retries=i % 4,
    )


async def write_all(writer: LocalDagWriter, files: list[tuple[str, str]]) -> None:
    """Write every file, one after another (as the scheduler does per event)."""
    for dag_id, source in files:
        await writer.write(dag_id, source)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dags", type=int, default=1000, help="how many DAGs (default 1,000)")
    args = parser.parse_args()
    count = args.dags

    specs = [spec(i) for i in range(count)]
    assert len({s.dag_id for s in specs}) == count, "the bench's specs must have distinct dag ids"

    started = time.perf_counter()
    files = [(s.dag_id, render_scoring_dag(s)) for s in specs]
    render_s = time.perf_counter() - started
    size = sum(len(source) for _, source in files)

    with tempfile.TemporaryDirectory(prefix="pf-dag-bench-") as scratch:
        home = Path(scratch)
        writer = LocalDagWriter(home / "bench-dags")
        started = time.perf_counter()
        asyncio.run(write_all(writer, files))
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        asyncio.run(write_all(writer, files))  # the same sources again: unchanged files are left alone
        rewrite_s = time.perf_counter() - started

        airflow = AirflowEnv.create(home / "airflow", migrate=False)  # DagBag needs no metadata database
        report = airflow.load_dags(writer.folder, timeout=600)

    print(f"DAGs:                {count} scoring DAGs, {size / count / 1024:.1f} KiB of source each")
    print(f"render:              {render_s * 1000 / count:.3f} ms/DAG ({render_s:.2f} s total)")
    print(f"write (local):       {write_s * 1000 / count:.3f} ms/DAG ({write_s:.2f} s total, fsync + rename)")
    print(f"write unchanged:     {rewrite_s * 1000 / count:.3f} ms/DAG (compare only)")
    print(
        f"DagBag parse:        {report.parse_seconds:.2f} s total, {report.parse_seconds * 1000 / count:.2f} ms/DAG "
        f"(process incl. Airflow import: {report.process_seconds:.1f} s)"
    )
    print(f"DAGs loaded:         {len(report.dags)}")
    print(f"import errors:       {len(report.import_errors)}")
    print(f"warnings:            {sum(len(w) for w in report.warnings.values())}")
    for path, error in list(report.import_errors.items())[:3]:
        print(f"  {path}: {error.splitlines()[-1] if error else ''}")


if __name__ == "__main__":
    main()
