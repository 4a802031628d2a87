"""One contract suite for every ProcessedEvents backend, and the idempotent() decorator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pfactory.bus import InMemoryProcessedEvents, ProcessedEvents, SqliteProcessedEvents, idempotent
from pfactory.contracts.events import Envelope, JobStatus, JobStatusChanged


class ProcessedEventsContract:
    """Behaviour every backend must have; subclasses provide the ``store`` fixture."""

    async def test_an_unmarked_event_is_not_seen(self, store: ProcessedEvents) -> None:
        assert not await store.seen("registrar", "e1")

    async def test_a_marked_event_is_seen_by_that_handler_only(self, store: ProcessedEvents) -> None:
        await store.mark("registrar", "e1")
        assert await store.seen("registrar", "e1")
        assert not await store.seen("scheduler", "e1")
        assert not await store.seen("registrar", "e2")

    async def test_marking_twice_is_harmless(self, store: ProcessedEvents) -> None:
        await store.mark("registrar", "e1")
        await store.mark("registrar", "e1")
        assert await store.seen("registrar", "e1")

    async def test_forget_before_drops_only_older_marks(self, store: ProcessedEvents) -> None:
        await store.mark("registrar", "e1")
        assert await store.forget_before(datetime.now(UTC) - timedelta(hours=1)) == 0
        assert await store.seen("registrar", "e1")
        assert await store.forget_before(datetime.now(UTC) + timedelta(seconds=1)) == 1
        assert not await store.seen("registrar", "e1")

    async def test_idempotent_handler_runs_once_per_event_and_again_after_a_failure(
        self, store: ProcessedEvents
    ) -> None:
        calls: list[str] = []
        fail = [True]

        @idempotent(store, "trainer.fit")
        async def handle(envelope: Envelope) -> None:
            calls.append(envelope.event_id)
            if fail[0]:
                fail[0] = False
                raise RuntimeError("crashed before finishing")

        envelope = Envelope.wrap(JobStatusChanged(job_id="j", status=JobStatus.RUNNING), producer="t")
        with pytest.raises(RuntimeError):
            await handle(envelope)  # a failure is not marked: the redelivery must run it again
        await handle(envelope)
        await handle(envelope)
        assert calls == [envelope.event_id, envelope.event_id]


class TestInMemoryProcessedEvents(ProcessedEventsContract):
    @pytest.fixture
    def store(self) -> ProcessedEvents:
        return InMemoryProcessedEvents()


class TestSqliteProcessedEvents(ProcessedEventsContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ProcessedEvents:
        return SqliteProcessedEvents(tmp_path / "processed.db")

    async def test_marks_survive_a_new_instance(self, tmp_path: Path) -> None:
        first = SqliteProcessedEvents(tmp_path / "p.db")
        await first.mark("registrar", "e1")
        first.close()
        assert await SqliteProcessedEvents(tmp_path / "p.db").seen("registrar", "e1")
