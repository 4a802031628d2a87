"""A concurrent platform consumer in its own process, for the hard-kill delivery test.

Run: ``python -m tests.bus.concurrent_consumer_process --bootstrap H:P --topic T --group G --dlq D
--out FILE --concurrency N [--block JOB,JOB]``. Appends ``start <job>`` when a handler starts and
``done <job>`` when it finishes; handlers of ``--block`` jobs never finish (the test kills the process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from pfactory.bus import BusSettings, EventPublisher, build_broker, subscribe
from pfactory.contracts.events import Envelope, JobStatusChanged


async def main(args: argparse.Namespace) -> None:
    settings = BusSettings(
        bootstrap_servers=args.bootstrap,
        client_id=f"proc{os.getpid()}",
        session_timeout_ms=3_000,
        heartbeat_interval_ms=500,
        dead_letter_topic=args.dlq,
    )
    broker = build_broker(settings, service="concurrent-consumer-process")
    out = Path(args.out)
    blocked = set(args.block.split(",")) if args.block else set()

    def write(line: str) -> None:
        with out.open("a") as file:
            file.write(line + "\n")

    @subscribe(
        broker,
        args.topic,
        group_id=args.group,
        settings=settings,
        publisher=EventPublisher(broker, "concurrent-consumer-process"),
        concurrency=args.concurrency,
    )
    async def train(envelope: Envelope) -> None:
        job = envelope.open_as(JobStatusChanged).job_id
        write(f"start {job}")
        if job in blocked:
            await asyncio.Event().wait()  # an hour-long job, as far as the test is concerned
        write(f"done {job}")

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
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--block", default="")
    asyncio.run(main(parser.parse_args()))
