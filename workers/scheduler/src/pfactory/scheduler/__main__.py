"""``python -m pfactory.scheduler``: run the scheduler until SIGTERM/SIGINT."""

from __future__ import annotations

from pfactory.bus.app import configure_process
from pfactory.scheduler.settings import SchedulerSettings


def main() -> None:
    """Read settings from the environment and serve."""
    settings = SchedulerSettings()
    configure_process(settings.telemetry, "scheduler", settings.log_level)  # before importing the app
    from pfactory.scheduler.app import run

    run(settings)


if __name__ == "__main__":
    main()
