"""Stage durations from a run's own timings: only the stages it entered (the whole path: test_trainer)."""

from __future__ import annotations

from pfactory.telemetry import catalog
from pfactory.telemetry.metrics import Metrics
from pfactory.trainer.jobspec import RunResult, Timings
from pfactory.trainer.service import report_stage_timings
from tests.utils.statsd import capturing_statsd


def test_a_run_that_failed_loading_reports_its_load_time_and_no_other_stage() -> None:
    failed = RunResult(job_id="j", run_id="trial-000", ok=False, stage="load", timings=Timings(load=0.25))
    done = RunResult(
        job_id="j",
        run_id="trial-001",
        ok=True,
        stage="done",
        timings=Timings(load=1, fit=2.5, evaluate=0.5, save=0.125),
    )
    with capturing_statsd() as statsd:
        metrics = Metrics(service="trainer", port=statsd.port)
        report_stage_timings(metrics, failed)
        report_stage_timings(metrics, done)
        statsd.wait_for(lambda: len(statsd.named(catalog.STAGE_DURATION.name)) >= 5, 5, "five stage times")
    seen = sorted(
        (line.tags["stage"], line.value) for line in statsd.named(catalog.STAGE_DURATION.name, kind="train")
    )
    assert seen == [("evaluate", 500), ("fit", 2500), ("load", 250), ("load", 1000), ("save", 125)]
