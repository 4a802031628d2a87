"""The embedded runner's tick mark: read back bounded by the catch-up window, refused when damaged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pfactory.scheduler.ticks import TickMark

NOW = datetime(2026, 3, 29, 6, 30, tzinfo=UTC)


def test_a_written_mark_is_read_back(tmp_path: Path) -> None:
    mark = TickMark(tmp_path / "state" / "last-tick.json")
    assert mark.read(NOW, timedelta(days=1)) is None  # never ticked: start from now
    mark.write(NOW - timedelta(hours=3))
    assert mark.read(NOW, timedelta(days=1)) == NOW - timedelta(hours=3)
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["last-tick.json"]  # no temporary left


def test_catch_up_is_bounded_and_a_mark_from_the_future_is_now(tmp_path: Path) -> None:
    mark = TickMark(tmp_path / "last-tick.json")
    mark.write(NOW - timedelta(days=9))
    assert mark.read(NOW, timedelta(days=1)) == NOW - timedelta(days=1)
    assert mark.read(NOW, timedelta(0)) == NOW
    mark.write(NOW + timedelta(hours=1))  # a clock offset was undone
    assert mark.read(NOW, timedelta(days=1)) == NOW


@pytest.mark.parametrize("text", ["not json", '{"other": 1}', '{"last_tick": "2026-03-29T06:00:00"}'])
def test_a_damaged_mark_is_refused_with_what_to_do(tmp_path: Path, text: str) -> None:
    path = tmp_path / "last-tick.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="delete"):
        TickMark(path).read(NOW, timedelta(days=1))


def test_memory_only_marks_nothing(tmp_path: Path) -> None:
    mark = TickMark(None)
    mark.write(NOW)
    assert mark.read(NOW, timedelta(days=1)) is None
