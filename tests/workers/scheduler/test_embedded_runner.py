"""The embedded default of issue #7: with no Airflow configured, the scheduler's own cron runner scores
every day. Real processes on the real broker: a live credit model, the scheduler (its clock moved to just
before 06:00 London) and the scorer worker. The firing publishes a ScoringRequested and the day's
predictions land on disk. Then the scheduler is stopped and started again the next morning, after that
day's 06:00 has passed: from the tick it recorded, it fires the missed run on start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, ScoringRequested
from pfactory.scorer.batch import PREDICTIONS_FILE
from tests.workers.scorer.credit_model import MODEL_NAME, fit_and_register
from tests.workers.support import collect, http_status, running_worker, wait_for
from tests.workers.trainer.credit_data import write_credit_store

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LONDON = ZoneInfo("Europe/London")  # the example model scores at 06:00 London


def _offset_to(instant: datetime) -> str:
    """PF_SCHEDULER_CLOCK_OFFSET_S that makes the scheduler's clock read ``instant`` now."""
    return str((instant - datetime.now(LONDON)).total_seconds())


def _requested_by_scheduler(day: date) -> Callable[[Envelope], bool]:
    def keep(envelope: Envelope) -> bool:
        return (
            envelope.producer == "scheduler"
            and envelope.type == "ScoringRequested"
            and ScoringRequested.model_validate(envelope.payload).ds == day
        )

    return keep


def test_the_embedded_runner_scores_each_day_and_catches_up_after_a_restart(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    today = datetime.now(LONDON).date()
    raw, store = write_credit_store(tmp_path, start=today - timedelta(days=1), days=3, applicants_per_day=120)
    registry_dir = tmp_path / "registry"
    fit_and_register(raw, store, registry_dir, today - timedelta(days=1), 1)  # version 1, live
    asyncio.run(ensure_topics(bus_settings))

    def predictions(day: date) -> Path:
        return store / "predictions" / f"model={MODEL_NAME}" / "version=1" / f"ds={day}" / PREDICTIONS_FILE

    def scheduler_env(now: datetime) -> dict[str, str]:
        return {
            "PF_REGISTRY_DATA_DIR": str(registry_dir),
            "PF_SCHEDULER_STATE_DIR": str(tmp_path / "scheduler-state"),
            "PF_SCHEDULER_TICK_S": "0.5",
            "PF_SCHEDULER_CLOCK_OFFSET_S": _offset_to(now),
        }

    scorer_env = {"PF_REGISTRY_DATA_DIR": str(registry_dir), "PF_SCORER_STORE_ROOT": str(store)}
    six = datetime.combine(today, time(6), LONDON)
    with running_worker("scorer", bus_settings, tmp_path, extra_env=scorer_env) as scorer:
        wait_for(lambda: http_status(f"{scorer.url}/health") == 200, 30, "scorer /health", scorer.log)
        first_dir = tmp_path / "first"
        first_dir.mkdir()
        # 20 s before 06:00: the process starts and ticks before the firing, which then happens live
        with running_worker(
            "scheduler", bus_settings, first_dir, extra_env=scheduler_env(six - timedelta(seconds=20))
        ) as scheduler:
            wait_for(
                lambda: http_status(f"{scheduler.url}/ready") == 200, 30, "scheduler /ready", scheduler.log
            )
            assert not predictions(today).exists(), "scored before 06:00"
            wait_for(
                lambda: predictions(today).exists(),
                90,
                f"the predictions of {today}",
                lambda: f"scheduler:\n{scheduler.log()[-3000:]}\nscorer:\n{scorer.log()[-3000:]}",
            )
        [fired] = asyncio.run(
            collect(
                bus_settings, topics.SCORING_REQUESTED, _requested_by_scheduler(today), count=1, timeout_s=20
            )
        )
        assert ScoringRequested.model_validate(fired.payload).job_id == f"sched-{MODEL_NAME}-v1-{today}"
        assert (tmp_path / "scheduler-state" / "last-tick.json").exists()

        # Down through tomorrow's 06:00; started again at 06:10 it fires the run it missed.
        tomorrow = today + timedelta(days=1)
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        late = datetime.combine(tomorrow, time(6, 10), LONDON)
        with running_worker(
            "scheduler", bus_settings, second_dir, extra_env=scheduler_env(late)
        ) as scheduler:
            wait_for(
                lambda: predictions(tomorrow).exists(),
                90,
                f"the missed predictions of {tomorrow}",
                lambda: f"scheduler:\n{scheduler.log()[-3000:]}\nscorer:\n{scorer.log()[-3000:]}",
            )
            assert "resumes from" in scheduler.log()
        fired_again = asyncio.run(
            collect(
                bus_settings,
                topics.SCORING_REQUESTED,
                _requested_by_scheduler(tomorrow),
                count=1,
                timeout_s=20,
            )
        )
        assert len(fired_again) == 1
