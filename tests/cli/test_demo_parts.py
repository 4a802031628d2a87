"""The demo's pure parts: its calendar, the training window it submits, the firing it moves the clock to."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pfactory.cli.demo import DemoDays, training_window
from pfactory.cli.demo_scoring import first_firing
from pfactory.cli.stack import Stack, StackError
from pfactory.contracts.loader import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LONDON = ZoneInfo("Europe/London")


def test_the_calendar_is_the_days_ending_today_and_the_next_day() -> None:
    calendar = DemoDays(date(2026, 3, 1), 60)
    assert (calendar.start, calendar.today, calendar.next_day) == (
        date(2026, 1, 1),
        date(2026, 3, 1),
        date(2026, 3, 2),
    )
    assert (calendar.today - calendar.start).days + 1 == 60


@pytest.mark.parametrize("name", ["credit_model.yaml", "credit_model_statsmodels.yaml"])
def test_the_submitted_model_trains_on_the_generated_days_and_nothing_else_changes(
    name: str, tmp_path: Path
) -> None:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    changed = training_window(text, date(2026, 10, 5), date(2026, 12, 3))
    written = tmp_path / name
    written.write_text(changed, encoding="utf-8")
    config = load_config(written)
    window = config.spec.training.window  # type: ignore[union-attr]
    assert (window.start, window.end) == (date(2026, 10, 5), date(2026, 12, 3))
    original = load_config(EXAMPLES / name)
    assert original.spec.training.window.start == date(2024, 1, 1)  # type: ignore[union-attr]
    # only the two window lines differ
    differing = [
        pair for pair in zip(text.splitlines(), changed.splitlines(), strict=True) if pair[0] != pair[1]
    ]
    assert [old.split(":")[0].strip() for old, _ in differing] == ["start", "end"]


def test_a_config_without_a_window_is_submitted_unchanged() -> None:
    text = "spec:\n  training:\n    split:\n      strategy: time\n"
    assert training_window(text, date(2026, 1, 1), date(2026, 1, 2)) == text


def test_the_first_firing_of_a_daily_schedule_is_in_its_zone() -> None:
    summer = first_firing("0 6 * * *", date(2026, 7, 1), LONDON)
    assert summer == datetime(2026, 7, 1, 6, 0, tzinfo=LONDON)
    assert summer.utcoffset() is not None and summer.utcoffset().total_seconds() == 3600  # BST
    assert first_firing("30 2 * * *", date(2026, 12, 4), LONDON).hour == 2


@pytest.mark.parametrize("cron", ["*/5 * * * *", "0 6 * * 1", "0 6,18 * * *"])
def test_a_schedule_the_demo_cannot_follow_is_refused_with_the_reason(cron: str) -> None:
    with pytest.raises(ValueError, match="daily 'm h \\* \\* \\*' schedule"):
        first_firing(cron, date(2026, 12, 4), LONDON)


def test_restarting_a_service_the_stack_does_not_run_names_what_it_runs(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="'scheduler' is not running in this stack"):
        Stack(tmp_path / ".pfactory").restart("scheduler", {"PF_SCHEDULER_CLOCK_OFFSET_S": "60"})
