"""Feature sets with a schedule: what the scheduler knows of them, kept in a small file.

Feature-set configs reach the scheduler in the ``MaterialisationRequested`` a submission publishes (the
config travels in the event). One with ``spec.schedule`` is remembered here, per name and version, so
that a restarted scheduler keeps materialising it; one submitted again without a schedule is forgotten.
The file is rewritten atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FeatureSetSchedule:
    """A feature set version materialised on a cron."""

    name: str
    version: str
    cron: str
    timezone: str
    owner: str
    config: dict[str, Any]

    @property
    def key(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


def schedule_of(name: str, version: str, config: dict[str, Any]) -> FeatureSetSchedule | None:
    """The schedule a feature-set config declares, or None when it is materialised on demand only."""
    spec = config.get("spec") if isinstance(config.get("spec"), dict) else {}
    schedule = spec.get("schedule") if isinstance(spec, dict) else None
    if not isinstance(schedule, dict) or not isinstance(schedule.get("cron"), str):
        return None
    metadata = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
    owner = metadata.get("owner") if isinstance(metadata, dict) else None
    return FeatureSetSchedule(
        name=name,
        version=version,
        cron=schedule["cron"],
        timezone=str(schedule.get("timezone") or "UTC"),
        owner=owner if isinstance(owner, str) and owner else "pfactory",
        config=config,
    )


class FeatureSetBook:
    """The scheduled feature sets, in memory and in ``path`` (None: memory only)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._items: dict[str, FeatureSetSchedule] = {}
        if path is not None and path.exists():
            try:
                for item in json.loads(path.read_text()):
                    schedule = FeatureSetSchedule(**item)
                    self._items[schedule.key] = schedule
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"{path} is not a feature-set schedule file ({error}); move it away and submit the "
                    "scheduled feature sets again (`pfactory submit <feature set>.yaml`)"
                ) from None

    def items(self) -> list[FeatureSetSchedule]:
        """Every scheduled feature set, by name@version."""
        return [self._items[key] for key in sorted(self._items)]

    def put(self, schedule: FeatureSetSchedule) -> bool:
        """Remember (or update) a schedule; True when something changed."""
        if self._items.get(schedule.key) == schedule:
            return False
        self._items[schedule.key] = schedule
        self._save()
        return True

    def forget(self, name: str, version: str) -> FeatureSetSchedule | None:
        """Drop a feature set's schedule; returns what was dropped."""
        dropped = self._items.pop(f"{name}@{version}", None)
        if dropped is not None:
            self._save()
        return dropped

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".feature-sets-", dir=self._path.parent)
        with os.fdopen(handle, "w") as out:
            json.dump([asdict(item) for item in self.items()], out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self._path)
