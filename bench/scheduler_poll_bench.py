"""Scheduler poll benchmark: the cost of one registry poll at 100,000 versions with 10 changes (issue #7).

The poll is the scheduler's safety net for missed events: it reads the registry's change log after its
cursor (``VersionIndex.changes_since``) and considers each changed version. Its cost should follow the
changes, not the registry's size. This builds an embedded (SQLite) registry of ``--versions`` committed
versions over ``--models`` models, then times, with the scheduler's own ``poll_changes``:

* a poll with nothing changed, and a poll after ``--changes`` status changes (the figure the issue asks);
* a read of the whole change log from the start (what a poll that rescanned everything would cost);

and prints the medians of ``--repeat`` runs. No timed assertion: the figures are for people.

    uv run python bench/scheduler_poll_bench.py
    uv run python bench/scheduler_poll_bench.py --versions 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.registry.factories import make_version

from pfactory.contracts.events import Event
from pfactory.registry.model import PairKey, VersionStatus
from pfactory.registry.sqlite import SqliteVersionIndex
from pfactory.scheduler.service import Scheduler, poll_changes

CONFIG = {"kind": "Model", "spec": {"scoring": {"schedule": "0 6 * * *", "timezone": "UTC"}}}


def say(line: str = "") -> None:
    print(line, flush=True)


async def fill(index: SqliteVersionIndex, versions: int, models: int) -> list[PairKey]:
    pairs = [PairKey.of(f"model_{i:04d}", "features", "1") for i in range(models)]
    started = time.perf_counter()
    for n in range(versions):
        pair = pairs[n % models]
        key = str(uuid.uuid4())
        allocation = await index.allocate(pair, key)
        await index.commit(make_version(pair, allocation.version, key, config=CONFIG))
        if (n + 1) % 10_000 == 0:
            rate = (n + 1) / (time.perf_counter() - started)
            say(f"  registry: {n + 1:,}/{versions:,} versions committed ({rate:,.0f}/s)")
    return pairs


async def timed(step: Callable[[], Awaitable[object]], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pf-poll-bench-") as folder:
        async with SqliteVersionIndex(Path(folder) / "registry.db") as index:
            say(
                f"scheduler poll bench: {args.versions:,} versions over {args.models:,} models (SQLite registry)"
            )
            pairs = await fill(index, args.versions, args.models)

            async def publish(event: Event, event_id: str) -> None:
                pass

            scheduler = Scheduler(registry=index, publish=publish, clock=lambda: datetime.now(UTC))
            cursor = (await index.changes_since(0, limit=1)).cursor
            while True:  # to the end of the log, as a running scheduler's cursor is
                batch = await index.changes_since(cursor, limit=1000)
                if not batch.items:
                    break
                cursor = batch.cursor

            idle = await timed(lambda: poll_changes(scheduler, cursor), args.repeat)
            changed_ms: list[float] = []
            considered = 0
            for round_ in range(args.repeat):
                for i in range(args.changes):  # 10 versions of 10 models approved by a person
                    pair = pairs[(round_ * args.changes + i) % len(pairs)]
                    await index.transition(pair, 1 + round_, VersionStatus.APPROVED, actor="bench")
                started = time.perf_counter()
                cursor, considered = await poll_changes(scheduler, cursor)
                changed_ms.append((time.perf_counter() - started) * 1000)

            async def full_scan() -> None:
                at = 0
                while True:
                    batch = await index.changes_since(at, limit=1000)
                    if not batch.items:
                        return
                    at = batch.cursor

            scan = await timed(full_scan, 1)
    say()
    say(f"  one poll, nothing changed               median {idle:8.2f} ms")
    say(
        f"  one poll, {args.changes} changes (considered: {considered}) median {statistics.median(changed_ms):8.2f} ms"
        "  <- issue #7's figure"
    )
    say(f"  reading the whole change log instead           {scan:8.1f} ms  ({args.versions:,} versions)")
    say("  the poll reads the change log after its cursor (an index on the change sequence): its cost")
    say("  follows the changes; considering a changed version (approval check, schedule, go-live) dominates.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--versions", type=int, default=100_000, help="versions in the registry (default 100,000)"
    )
    parser.add_argument("--models", type=int, default=1_000, help="models they belong to (default 1,000)")
    parser.add_argument("--changes", type=int, default=10, help="versions changed before the timed poll")
    parser.add_argument("--repeat", type=int, default=5, help="polls timed (median)")
    asyncio.run(main(parser.parse_args()))
