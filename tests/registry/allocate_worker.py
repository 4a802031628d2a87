"""Run as a process: allocate versions in a shared SQLite index and print them as JSON."""

from __future__ import annotations

import asyncio
import json
import sys

from pfactory.registry.sqlite import SqliteVersionIndex
from tests.registry.factories import PAIR


async def _allocate(path: str, prefix: str, count: int) -> list[int]:
    async with SqliteVersionIndex(path) as index:
        return [(await index.allocate(PAIR, f"{prefix}-{i}")).version for i in range(count)]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_allocate(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
