"""``python -m pfactory.alerter``: run the alert router until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from pfactory.alerter.routing import RoutesFileError
from pfactory.alerter.settings import AlerterSettings
from pfactory.bus.app import configure_process


def main() -> None:
    """Read settings from the environment and serve; a bad routes file exits 2 with what to fix."""
    settings = AlerterSettings()
    configure_process(settings.telemetry, "alerter", settings.log_level)  # before importing the app
    from pfactory.alerter.app import run

    try:
        run(settings)
    except RoutesFileError as error:
        print(f"pfactory.alerter: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
