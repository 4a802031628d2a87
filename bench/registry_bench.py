"""Registry benchmark: register, get-live and list-by-pair as the registry grows.

Runs the real index backends: SQLite (embedded) and DynamoDB on moto_server. Prints the median
and p99 latency of each operation at each size and how it grows from the smallest size.

    uv run python bench/registry_bench.py                      # 10, 1,000, 100,000 on SQLite; DynamoDB up to 1,000
    uv run python bench/registry_bench.py --dynamodb-max 100000

Anchor (issue #3, this machine): MLflow 3.17 search_model_versions on SQLite takes 7 ms at 50
versions and 64 ms at 1,000 (p95 236 ms), growing linearly.
Target: get-live and list-by-pair p99 <= 5 ms on SQLite at 100,000 versions, flat as versions grow.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pfactory.registry.model import (  # noqa: E402
    ArtifactInfo,
    Lineage,
    MetricValue,
    ModelVersion,
    PairKey,
    VersionStatus,
)
from pfactory.registry.wiring import RegistryIndex  # noqa: E402

PAIR = PairKey.of("credit_default", "credit_features", "1")


def record(pair: PairKey, version: int, key: str) -> ModelVersion:
    """A version record the size of a real one (config, metrics, lineage)."""
    return ModelVersion(
        model_name=pair.model_name,
        feature_set=pair.feature_set,
        version=version,
        allocation_key=key,
        artifact=ArtifactInfo(
            uri=f"file:///r/{pair}/version={version}/model.skops", sha256="a" * 64, size_bytes=4096
        ),
        framework="scikit-learn",
        library_versions={"scikit-learn": "1.9.1", "skops": "0.16.0"},
        config={
            "kind": "Model",
            "metadata": {"name": pair.model_name},
            "spec": {"task": "binary_classification"},
        },
        metrics={"roc_auc": MetricValue(value=0.8, ci_low=0.78, ci_high=0.82)},
        fairness={"age_band": {"passed": True}},
        gates={"fairness": True, "validation": True},
        lineage=Lineage(feature_set_version="1", label_source="labels", row_counts={"train": 800}),
        created_by="bench",
    )


async def register(index: RegistryIndex, n: int) -> None:
    """One registration's metadata path: allocate a number, commit the record."""
    allocation = await index.allocate(PAIR, f"job-{n}")
    await index.commit(record(PAIR, allocation.version, f"job-{n}"))


async def grow(index: RegistryIndex, start: int, stop: int, *, concurrency: int) -> None:
    """Register versions start..stop-1, ``concurrency`` at a time, with a progress line."""
    began = time.perf_counter()
    for batch in range(start, stop, concurrency):
        await asyncio.gather(*(register(index, n) for n in range(batch, min(batch + concurrency, stop))))
        done = min(batch + concurrency, stop)
        if (done - start) % max(1, (stop - start) // 10) < concurrency or done == stop:
            rate = (done - start) / max(time.perf_counter() - began, 1e-9)
            print(
                f"\r    seeding {done - start:>7,}/{stop - start:,} versions ({rate:,.0f}/s)",
                end="",
                flush=True,
            )
    print()


async def timed(fn: Callable[[], Awaitable[Any]], samples: int) -> list[float]:
    """Latencies of ``samples`` sequential calls, in milliseconds."""
    out: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def p99(values: list[float]) -> float:
    """99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def bench_backend(
    name: str, index: RegistryIndex, sizes: list[int], samples: int, concurrency: int
) -> dict[int, dict[str, tuple[float, float]]]:
    """Grow the registry through each size and measure the three operations there."""
    results: dict[int, dict[str, tuple[float, float]]] = {}
    have = 0
    live_set = False
    for size in sizes:
        print(f"  {name}: {size:,} versions")
        await grow(index, have + 1, size + 1, concurrency=concurrency)
        have = size
        if not live_set:
            await index.transition(PAIR, 1, VersionStatus.APPROVED, actor="bench")
            await index.transition(PAIR, 1, VersionStatus.LIVE, actor="bench")
            live_set = True
        live = await timed(lambda: index.get_live(PAIR), samples)  # reads first, at exactly `size` versions
        listing = await timed(lambda: index.list_versions(PAIR, limit=50), samples)
        page = await index.list_versions(PAIR, limit=min(size, 50))
        assert len(page.items) == min(size, 50) and (await index.get_live(PAIR)) is not None
        fresh_jobs = itertools.count(10**9 + have)  # new job ids: a repeated id would be an idempotent replay
        reg = await timed(lambda jobs=fresh_jobs: register(index, next(jobs)), samples)
        have += samples  # registrations measured above add versions too
        results[size] = {
            name_: (statistics.median(v), p99(v))
            for name_, v in (("register", reg), ("get-live", live), ("list-by-pair", listing))
        }
    return results


def report(name: str, results: dict[int, dict[str, tuple[float, float]]]) -> None:
    """Print one backend's table: median and p99 per operation and size, and the growth."""
    sizes = sorted(results)
    print(f"\n{name}")
    print(
        f"  {'operation':<14}" + "".join(f"{f'{s:,} versions':>30}" for s in sizes) + f"{'growth (p50)':>16}"
    )
    for op in ("register", "get-live", "list-by-pair"):
        cells = "".join(
            f"{f'p50 {results[s][op][0]:.2f} / p99 {results[s][op][1]:.2f} ms':>30}" for s in sizes
        )
        growth = results[sizes[-1]][op][0] / max(results[sizes[0]][op][0], 1e-9)
        print(f"  {op:<14}{cells}{f'x{growth:.2f}':>16}")


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,1000,100000", help="registry sizes, comma separated")
    parser.add_argument("--samples", type=int, default=300, help="timed calls per operation and size")
    parser.add_argument(
        "--dynamodb-max", type=int, default=1000, help="largest size on DynamoDB/moto (0 skips it)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent registrations while seeding")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    from pfactory.registry.sqlite import SqliteVersionIndex

    with tempfile.TemporaryDirectory() as tmp:
        index = SqliteVersionIndex(Path(tmp) / "registry.db")
        try:
            sqlite_results = await bench_backend("SQLite", index, sizes, args.samples, args.concurrency)
        finally:
            await index.close()
        report("SQLite (embedded)", sqlite_results)
        target = sqlite_results[sizes[-1]]
        ok = target["get-live"][1] <= 5 and target["list-by-pair"][1] <= 5
        print(
            f"  target p99 <= 5 ms at {sizes[-1]:,}: get-live {target['get-live'][1]:.2f} ms, "
            f"list-by-pair {target['list-by-pair'][1]:.2f} ms -> {'met' if ok else 'NOT met'}"
        )

        dynamo_sizes = [s for s in sizes if s <= args.dynamodb_max]
        if dynamo_sizes:
            import os

            from tests.utils.servers import running_moto

            from pfactory.registry.dynamodb import DynamoDBVersionIndex
            from pfactory.registry.settings import DynamoDBVersionIndexSettings

            os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
            with running_moto(Path(tmp)) as endpoint:
                ddb = DynamoDBVersionIndex(DynamoDBVersionIndexSettings(endpoint_url=endpoint))
                await ddb.create_table()
                try:
                    dynamo_results = await bench_backend(
                        "DynamoDB", ddb, dynamo_sizes, args.samples, args.concurrency
                    )
                finally:
                    await ddb.close()
            report(
                "DynamoDB on moto_server (an emulator: its latency is moto's, not DynamoDB's)", dynamo_results
            )
    print(
        "\nanchor: MLflow 3.17 search_model_versions (SQLite) 7 ms at 50 versions, 64 ms at 1,000 (p95 236 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
