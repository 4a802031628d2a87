"""``python -m pfactory.alerter``: run the alert router until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from pfactory.alerter.app import run
from pfactory.alerter.routing import RoutesFileError
from pfactory.alerter.settings import AlerterSettings


def main() -> None:
    """Read settings from the environment and serve; a bad routes file exits 2 with what to fix."""
    try:
        run(AlerterSettings())
    except RoutesFileError as error:
        print(f"pfactory.alerter: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
