"""Consumer processes in one group: partitions shared, no loss, redelivery after a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfactory.bus import BusSettings, EventPublisher, build_broker, ensure_topics
from pfactory.contracts.events import JobStatus, JobStatusChanged
from pfactory.contracts.topics import DAY_MS, TopicSpec
from tests.bus.helpers import wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConsumerProcess:
    """``tests.bus.consumer_process`` running in a child process."""

    def __init__(
        self,
        settings: BusSettings,
        topic: str,
        group: str,
        workdir: Path,
        name: str,
        crash_on: str | None = None,
    ) -> None:
        self.out = workdir / f"{name}.out"
        self.assignments = workdir / f"{name}.assignments"
        self.out.touch()
        self.assignments.touch()
        command = [
            sys.executable,
            "-m",
            "tests.bus.consumer_process",
            "--bootstrap",
            settings.bootstrap_servers,
            "--topic",
            topic,
            "--group",
            group,
            "--dlq",
            settings.dead_letter_topic,
            "--out",
            str(self.out),
            "--assignments",
            str(self.assignments),
        ]
        if crash_on:
            command += ["--crash-on", crash_on]
        self.log = (workdir / f"{name}.log").open("wb")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def processed(self) -> list[str]:
        return self.out.read_text().split()

    def assignment(self) -> list[int] | None:
        lines = self.assignments.read_text().splitlines()
        return json.loads(lines[-1]) if lines else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[ConsumerProcess]]:
    """A list the test appends consumer processes to; all are stopped afterwards."""
    processes: list[ConsumerProcess] = []
    yield processes
    for process in processes:
        process.stop()


async def test_two_processes_in_a_group_share_partitions_and_process_each_event_once(
    settings: BusSettings, topic_name: str, tmp_path: Path, spawn: list[ConsumerProcess]
) -> None:
    await ensure_topics(settings, [TopicSpec(topic_name, 6, DAY_MS, "shared")])
    group = f"g-{topic_name}"
    first = ConsumerProcess(settings, topic_name, group, tmp_path, "first")
    second = ConsumerProcess(settings, topic_name, group, tmp_path, "second")
    spawn += [first, second]

    def balanced() -> bool:
        a, b = first.assignment(), second.assignment()
        return bool(a) and bool(b) and sorted((a or []) + (b or [])) == list(range(6))

    await wait_until(balanced, timeout=45, what="both processes to hold partitions")

    broker = build_broker(settings, service="producer")
    publisher = EventPublisher(broker, "test")
    async with broker:
        sent = [
            (
                await publisher.publish(
                    JobStatusChanged(job_id=f"job-{i}", status=JobStatus.QUEUED), topic=topic_name
                )
            ).event_id
            for i in range(60)
        ]
    await wait_until(
        lambda: len(first.processed()) + len(second.processed()) >= 60,
        timeout=30,
        what="all 60 events to be processed",
    )

    counts = Counter(first.processed() + second.processed())
    assert set(counts) == set(sent)
    assert max(counts.values()) == 1, "an event was processed twice"
    assert first.processed() and second.processed(), "one process got no events"


async def test_an_event_is_redelivered_after_a_crash_before_the_commit(
    settings: BusSettings, topic: str, tmp_path: Path, spawn: list[ConsumerProcess]
) -> None:
    broker = build_broker(settings, service="producer")
    publisher = EventPublisher(broker, "test")
    async with broker:
        sent = [
            (
                await publisher.publish(
                    JobStatusChanged(job_id=f"job-{i}", status=JobStatus.QUEUED), topic=topic
                )
            ).event_id
            for i in range(5)
        ]
    group = f"g-{topic}"
    crashing = ConsumerProcess(settings, topic, group, tmp_path, "crashing", crash_on=sent[2])
    spawn.append(crashing)
    await wait_until(lambda: crashing.process.poll() is not None, timeout=30, what="the crash")
    assert crashing.process.returncode == 1
    assert crashing.processed() == sent[:2]

    restarted = ConsumerProcess(settings, topic, group, tmp_path, "restarted")
    spawn.append(restarted)
    await wait_until(lambda: len(restarted.processed()) >= 3, timeout=45, what="the redelivery")

    # The two committed events are not delivered again; the one in flight at the crash is.
    assert restarted.processed() == sent[2:]
