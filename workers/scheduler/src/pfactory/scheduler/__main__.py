"""``python -m pfactory.scheduler``: run the scheduler until SIGTERM/SIGINT."""

from __future__ import annotations

from pfactory.scheduler.app import run
from pfactory.scheduler.settings import SchedulerSettings


def main() -> None:
    """Read settings from the environment and serve."""
    run(SchedulerSettings())


if __name__ == "__main__":
    main()
