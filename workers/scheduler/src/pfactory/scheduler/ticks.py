"""Where the embedded cron runner got to, kept in a small file so a restart catches up.

The runner fires every schedule whose firing falls between its last tick and now. Kept only in memory,
a scheduler that was down at 06:00 would never score that day. The mark is written after each tick
(atomically: a temporary file, then a rename) and read on start; firings missed while down are fired
on start, as far back as ``catch_up`` allows. A firing fired twice is harmless: its job id is fixed
per model, version and day, and the scorer and materialiser treat a repeated job id as the same job.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path


class TickMark:
    """The last completed tick, in ``path`` (None: memory only)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def read(self, now: datetime, catch_up: timedelta) -> datetime | None:
        """The instant to fire from: the saved mark, no earlier than ``now - catch_up``; None when unknown."""
        if self._path is None or not self._path.exists():
            return None
        try:
            saved = datetime.fromisoformat(json.loads(self._path.read_text())["last_tick"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{self._path} is not a scheduler tick file ({error}); delete it: the scheduler then "
                "starts from now and fires no missed schedules"
            ) from None
        if saved.tzinfo is None:
            raise ValueError(f"{self._path}: last_tick {saved} has no time zone; delete the file")
        return min(max(saved, now - catch_up), now)

    def write(self, at: datetime) -> None:
        """Record a completed tick."""
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".ticks-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump({"last_tick": at.isoformat()}, out)
            os.replace(temporary, self._path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
