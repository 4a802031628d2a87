"""A platform consumer in its own process, for the multi-process delivery tests.

Run: ``python -m tests.bus.consumer_process --bootstrap H:P --topic T --group G --out FILE``.
Appends each handled event id to ``--out``; writes its partition assignment to ``--assignments``
after every rebalance; with ``--crash-on ID`` it dies (``os._exit(1)``) inside the handler, before
the offset is committed, when that event arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from pfactory.bus import BusSettings, EventPublisher, build_broker, subscribe
from pfactory.contracts.events import Envelope


class AssignmentFile(ConsumerRebalanceListener):  # type: ignore[misc]
    """Writes the current assignment as one JSON line after each rebalance."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._write([])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._write(sorted(tp.partition for tp in assigned))

    def _write(self, partitions: list[int]) -> None:
        if self.path is not None:
            with self.path.open("a") as file:
                file.write(json.dumps(partitions) + "\n")


async def main(args: argparse.Namespace) -> None:
    settings = BusSettings(
        bootstrap_servers=args.bootstrap,
        client_id=f"proc{os.getpid()}",
        session_timeout_ms=3_000,
        heartbeat_interval_ms=500,
        dead_letter_topic=args.dlq,
    )
    broker = build_broker(settings, service="consumer-process")
    out = Path(args.out)

    @subscribe(
        broker,
        args.topic,
        group_id=args.group,
        settings=settings,
        publisher=EventPublisher(broker, "consumer-process"),
        listener=AssignmentFile(Path(args.assignments) if args.assignments else None),
    )
    async def record(envelope: Envelope) -> None:
        if envelope.event_id == args.crash_on:
            os._exit(1)
        with out.open("a") as file:
            file.write(f"{envelope.event_id}\n")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for flag in ("--bootstrap", "--topic", "--group", "--out", "--dlq"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--assignments")
    parser.add_argument("--crash-on")
    asyncio.run(main(parser.parse_args()))
