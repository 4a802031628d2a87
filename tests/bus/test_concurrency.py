"""subscribe(concurrency=N) against real Tansu: N at once, back-pressure, in-order commits, rebalances."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from faststream.kafka import TestKafkaBroker
from hypothesis import given
from hypothesis import strategies as st

from pfactory.bus import (
    BusSettings,
    ConsumerLoad,
    EventPublisher,
    build_broker,
    ensure_topics,
    subscribe,
)
from pfactory.bus.inflight import OffsetTracker
from pfactory.contracts.events import DeadLettered, Envelope, JobStatus, JobStatusChanged
from pfactory.contracts.topics import DAY_MS, TopicSpec
from tests.bus.helpers import read_topic, started, wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


class Jobs:
    """A handler whose jobs run until the test releases them; it logs starts, finishes and cancels."""

    def __init__(self, *, free: tuple[str, ...] = (), failing: tuple[str, ...] = ()) -> None:
        self.log: list[tuple[str, str]] = []
        self.release: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.failing = failing
        for job in free:
            self.release[job].set()

    async def __call__(self, envelope: Envelope) -> None:
        job = envelope.open_as(JobStatusChanged).job_id
        self.log.append(("start", job))
        if job in self.failing:
            self.log.append(("failed", job))
            raise ValueError(f"job {job}: the training set is empty")
        try:
            await self.release[job].wait()
        except asyncio.CancelledError:
            self.log.append(("cancelled", job))
            raise
        self.log.append(("finish", job))

    def of(self, what: str) -> list[str]:
        return [job for kind, job in self.log if kind == what]

    def running(self) -> set[str]:
        ended = {job for kind, job in self.log if kind in ("finish", "cancelled", "failed")}
        return {job for job in self.of("start") if job not in ended}


def queued(job_id: str) -> JobStatusChanged:
    return JobStatusChanged(job_id=job_id, status=JobStatus.QUEUED)


async def publish(settings: BusSettings, topic: str, jobs: list[str]) -> None:
    broker = build_broker(settings, service="producer")
    async with broker:
        publisher = EventPublisher(broker, "test")
        for job in jobs:
            await publisher.publish(queued(job), topic=topic)


async def committed(settings: BusSettings, group: str, topic: str, partition: int = 0) -> int | None:
    """The group's committed offset, read with OffsetFetch (no group membership, no join delay)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset = await consumer.committed(TopicPartition(topic, partition))
        return None if offset is None or offset < 0 else int(offset)
    finally:
        await consumer.stop()


async def wait_for_commit(
    settings: BusSettings, group: str, topic: str, offset: int, *, partition: int = 0, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await committed(settings, group, topic, partition)) != offset:
        if time.monotonic() > deadline:
            raise AssertionError(f"committed offset of {topic}[{partition}] is {seen}, expected {offset}")
        await asyncio.sleep(0.1)


async def test_two_records_run_at_once_and_a_third_waits_for_a_free_slot(
    settings: BusSettings, topic: str
) -> None:
    await publish(settings, topic, ["a", "b", "c"])  # fetched together, so back-pressure must hold c
    broker = build_broker(settings, service="conc")
    jobs = Jobs()
    load = ConsumerLoad()
    group = f"g-{topic}"
    publisher = EventPublisher(broker, "conc-test")
    subscribe(
        broker, topic, group_id=group, settings=settings, publisher=publisher, concurrency=2, load=load
    )(jobs)

    async with started(broker):
        await wait_until(lambda: jobs.running() == {"a", "b"} and load.paused, timeout=20, what="a and b")
        assert (load.in_flight, load.capacity, load.saturated) == (2, 2, True)
        assert "c" not in jobs.of("start")
        jobs.release["b"].set()
        await wait_until(lambda: "c" in jobs.of("start"), timeout=20, what="c to start once b is done")
        jobs.release["a"].set()
        jobs.release["c"].set()
        await wait_for_commit(settings, group, topic, 3)
        await wait_until(lambda: not load.paused, timeout=5, what="the consumer to resume")

    # Overlap measured from the handler's own events: c started only after b finished.
    assert jobs.log[:4] == [("start", "a"), ("start", "b"), ("finish", "b"), ("start", "c")]
    assert load.peak_buffered <= load.capacity
    assert (load.in_flight, load.buffered) == (0, 0)


async def test_records_arriving_despite_the_pause_are_buffered_up_to_the_bound_then_rewound(
    settings: BusSettings, topic: str
) -> None:
    await publish(settings, topic, ["a", "b", "c", "d", "e"])
    broker = build_broker(settings, service="overflow")
    jobs = Jobs()
    load = ConsumerLoad()
    group = f"g-{topic}"
    publisher = EventPublisher(broker, "overflow-test")
    subscribe(
        broker, topic, group_id=group, settings=settings, publisher=publisher, concurrency=2, load=load
    )(jobs)

    async with started(broker):
        await wait_until(lambda: jobs.running() == {"a", "b"} and load.paused, timeout=20, what="a and b")
        consumer: AIOKafkaConsumer | None = getattr(broker.subscribers[0], "consumer", None)
        assert consumer is not None
        # Resume behind the subscription's back: records arrive although every slot is taken.
        consumer.resume(*consumer.assignment())
        await wait_until(lambda: load.buffered == 1, timeout=10, what="c to be buffered")
        consumer.resume(*consumer.assignment())
        await wait_until(lambda: load.buffered == 2, timeout=10, what="d to be buffered")
        consumer.resume(*consumer.assignment())
        await wait_until(lambda: load.rewound == 1, timeout=10, what="e to be given back")
        assert (load.buffered, load.peak_buffered) == (2, 2)
        assert jobs.of("start") == ["a", "b"]
        for job in ("a", "b", "c", "d", "e"):
            jobs.release[job].set()
        await wait_for_commit(settings, group, topic, 5)

    assert jobs.of("start") == ["a", "b", "c", "d", "e"], "buffered and rewound records start in order"


async def test_commits_stop_at_the_lowest_unfinished_record_and_a_stop_redelivers_from_there(
    settings: BusSettings, topic: str
) -> None:
    await publish(settings, topic, ["first", "second"])
    group = f"g-{topic}"
    broker = build_broker(settings, service="in-order")
    jobs = Jobs(free=("second",))
    load = ConsumerLoad()
    publisher = EventPublisher(broker, "in-order-test")
    subscribe(
        broker, topic, group_id=group, settings=settings, publisher=publisher, concurrency=2, load=load
    )(jobs)

    async with started(broker):
        await wait_until(
            lambda: jobs.of("finish") == ["second"] and load.in_flight == 1,
            timeout=20,
            what="the second record to finish while the first runs",
        )
        # The second is done, but committing 2 would skip the first if the process died now.
        assert await committed(settings, group, topic) is None
    assert jobs.of("cancelled") == ["first"], "stopping the broker must cancel the running handler"
    assert await committed(settings, group, topic) is None

    restarted = build_broker(settings, service="in-order-restarted")
    again = Jobs(free=("first", "second"))
    subscribe(restarted, topic, group_id=group, settings=settings, publisher=publisher, concurrency=2)(again)
    async with started(restarted):
        await wait_for_commit(settings, group, topic, 2)

    # At-least-once: the unfinished first record comes again, and so does the second, finished
    # after it but never committed (handlers are idempotent).
    assert again.of("start") == ["first", "second"]


async def test_a_failing_record_is_dead_lettered_while_another_keeps_running(
    settings: BusSettings, topic: str
) -> None:
    await publish(settings, topic, ["slow", "bad", "fine"])
    group = f"g-{topic}"
    broker = build_broker(settings, service="dlq-conc")
    jobs = Jobs(free=("fine",), failing=("bad",))
    publisher = EventPublisher(broker, "dlq-conc-test")
    subscribe(broker, topic, group_id=group, settings=settings, publisher=publisher, concurrency=2)(jobs)

    async with started(broker):
        [record] = await read_topic(settings, settings.dead_letter_topic, count=1)
        await wait_until(lambda: jobs.of("finish") == ["fine"], timeout=20, what="fine to finish")
        assert jobs.running() == {"slow"}
        assert await committed(settings, group, topic) is None  # slow, at offset 0, is unfinished
        jobs.release["slow"].set()
        await wait_for_commit(settings, group, topic, 3)

    letter = Envelope.from_bytes(record.value).open_as(DeadLettered)
    assert (letter.offset, letter.attempts, letter.error_type) == (1, 1, "builtins.ValueError")
    assert "training set is empty" in letter.error
    assert jobs.of("start").count("bad") == 1


class RecordingListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """A user's listener: remembers every non-empty revocation and assignment."""

    def __init__(self) -> None:
        self.revoked: list[set[int]] = []
        self.assigned: list[set[int]] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            self.revoked.append({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned.append({tp.partition for tp in assigned})


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_a_handler_longer_than_max_poll_interval_keeps_the_partition(
    settings: BusSettings, topic: str, concurrency: int
) -> None:
    # Without ``concurrency`` the same handler blocks the poll loop: the member leaves its group
    # and the record is redelivered (checked by hand with this test; see subscribe's docstring).
    await publish(settings, topic, ["long"])
    group = f"g-{topic}"
    broker = build_broker(settings, service="long")
    jobs = Jobs()
    listener = RecordingListener()
    publisher = EventPublisher(broker, "long-test")
    max_poll_ms = 1_500
    subscribe(
        broker,
        topic,
        group_id=group,
        settings=settings,
        publisher=publisher,
        concurrency=concurrency,
        listener=listener,
        max_poll_interval_ms=max_poll_ms,
    )(jobs)

    async with started(broker):
        await wait_until(lambda: jobs.running() == {"long"}, timeout=20, what="the long job to start")
        # The scenario itself is elapsed time: a job three times longer than max_poll_interval_ms.
        await asyncio.sleep(3 * max_poll_ms / 1000)
        jobs.release["long"].set()
        await wait_for_commit(settings, group, topic, 1)

    assert jobs.of("start") == ["long"], "the long job was redelivered"
    assert listener.revoked == [] and listener.assigned == [{0}], "the member left its group"


async def test_a_rebalance_cancels_only_handlers_of_partitions_that_moved(
    settings: BusSettings, topic_name: str
) -> None:
    await ensure_topics(settings, [TopicSpec(topic_name, 2, DAY_MS, "two partitions")])
    group = f"g-{topic_name}"
    first, first_jobs, listener = build_broker(settings, service="first"), Jobs(), RecordingListener()
    publisher = EventPublisher(first, "rebalance-test")
    subscribe(
        first,
        topic_name,
        group_id=group,
        settings=settings,
        publisher=publisher,
        concurrency=2,
        listener=listener,
    )(first_jobs)
    second, second_jobs = build_broker(settings, service="second"), Jobs(free=("p0", "p1"))
    subscribe(second, topic_name, group_id=group, settings=settings, publisher=publisher, concurrency=2)(
        second_jobs
    )

    async with started(first):
        for partition in (0, 1):
            envelope = Envelope.wrap(queued(f"p{partition}"), producer="test")
            await first.publish(envelope.to_bytes(), topic_name, partition=partition)
        await wait_until(lambda: first_jobs.running() == {"p0", "p1"}, timeout=20, what="both jobs")
        async with started(second):
            await wait_until(lambda: len(listener.assigned) == 2, timeout=30, what="the rebalance")
            kept = listener.assigned[-1]
            assert len(kept) == 1, f"the first member now owns {kept}"
            moved = ({0, 1} - kept).pop()
            await wait_until(
                lambda: second_jobs.of("finish") == [f"p{moved}"], timeout=20, what="the new owner"
            )
            assert first_jobs.of("cancelled") == [f"p{moved}"]
            assert first_jobs.running() == {f"p{kept.pop()}"}
            await wait_for_commit(settings, group, topic_name, 1, partition=moved)
            first_jobs.release[f"p{1 - moved}"].set()
            await wait_for_commit(settings, group, topic_name, 1, partition=1 - moved)

    # The kept job ran once: the rebalance rewound its partition, and the rerun was recognised.
    assert first_jobs.of("start") == ["p0", "p1"] or first_jobs.of("start") == ["p1", "p0"]
    assert listener.revoked == [{0, 1}], "the user's listener must see the revocation too"


class ConcurrentConsumerProcess:
    """``tests.bus.concurrent_consumer_process`` running in a child process."""

    def __init__(
        self, settings: BusSettings, topic: str, group: str, out: Path, *, block: tuple[str, ...] = ()
    ) -> None:
        self.out = out
        out.touch()
        command = [
            sys.executable,
            "-m",
            "tests.bus.concurrent_consumer_process",
            *("--bootstrap", settings.bootstrap_servers, "--topic", topic, "--group", group),
            *("--dlq", settings.dead_letter_topic, "--out", str(out), "--concurrency", "2"),
            *("--block", ",".join(block)),
        ]
        self.log = out.with_suffix(".log").open("wb")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def lines(self, kind: str) -> list[str]:
        return [line.split()[1] for line in self.out.read_text().splitlines() if line.startswith(kind)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture
def spawn() -> Iterator[list[ConcurrentConsumerProcess]]:
    processes: list[ConcurrentConsumerProcess] = []
    yield processes
    for process in processes:
        process.stop()


async def test_a_hard_kill_with_records_in_flight_redelivers_every_unfinished_one(
    settings: BusSettings, topic: str, tmp_path: Path, spawn: list[ConcurrentConsumerProcess]
) -> None:
    await publish(settings, topic, ["j0", "j1", "j2", "j3"])
    group = f"g-{topic}"
    killed = ConcurrentConsumerProcess(settings, topic, group, tmp_path / "killed.out", block=("j1", "j3"))
    spawn.append(killed)
    # j0 done (committed), j1 running, j2 done after it (not committable), j3 running.
    await wait_until(
        lambda: set(killed.lines("done")) == {"j0", "j2"} and len(killed.lines("start")) == 4,
        timeout=30,
        what="two jobs done and two in flight",
    )
    await wait_for_commit(settings, group, topic, 1)
    killed.process.kill()  # SIGKILL: no shutdown code runs
    killed.process.wait(10)
    assert await committed(settings, group, topic) == 1

    restarted = ConcurrentConsumerProcess(settings, topic, group, tmp_path / "restarted.out")
    spawn.append(restarted)
    await wait_until(lambda: len(restarted.lines("done")) == 3, timeout=45, what="the redeliveries")
    await wait_for_commit(settings, group, topic, 4)

    assert restarted.lines("start") == ["j1", "j2", "j3"], "j0 was committed; everything after it comes again"


async def test_concurrent_handlers_run_under_the_in_memory_test_broker() -> None:
    settings = BusSettings(bootstrap_servers="127.0.0.1:1")  # never contacted
    broker = build_broker(settings, service="in-memory")
    publisher = EventPublisher(broker, "in-memory-test")
    jobs = Jobs()
    load = ConsumerLoad()
    subscribe(
        broker, "pf.in-memory", group_id="g", settings=settings, publisher=publisher, concurrency=2, load=load
    )(jobs)
    async with TestKafkaBroker(broker):
        for job in ("a", "b", "c"):
            await publisher.publish(queued(job), topic="pf.in-memory")
        await wait_until(lambda: jobs.running() == {"a", "b"}, timeout=5, what="a and b")
        assert load.buffered == 1  # nothing to pause in memory: c waits in the buffer
        for job in ("a", "b", "c"):
            jobs.release[job].set()
        await wait_until(lambda: len(jobs.of("finish")) == 3, timeout=5, what="all three")
    assert jobs.of("start") == ["a", "b", "c"]


@given(st.permutations(range(8)))
def test_the_committable_offset_never_passes_an_unfinished_record(finish_order: list[int]) -> None:
    tracker, tp = OffsetTracker(), TopicPartition("t", 0)
    for offset in range(8):
        tracker.start(tp, offset)
    finished: set[int] = set()
    for offset in finish_order:
        tracker.finish(tp, offset)
        finished.add(offset)
        first_unfinished = min(set(range(8)) - finished, default=8)
        assert tracker.committable(tp) == (first_unfinished or None)
        assert tracker.already_started(tp, offset)
