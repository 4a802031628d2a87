"""``python -m pfactory.materialiser``: run the materialiser until SIGTERM/SIGINT."""

from __future__ import annotations

from pfactory.bus.app import configure_process
from pfactory.materialiser.settings import MaterialiserSettings


def main() -> None:
    """Read settings from the environment and serve."""
    settings = MaterialiserSettings()
    configure_process(settings.telemetry, "materialiser", settings.log_level)  # before importing the app
    from pfactory.materialiser.app import run

    run(settings)


if __name__ == "__main__":
    main()
