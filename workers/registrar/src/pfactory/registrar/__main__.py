"""``python -m pfactory.registrar``: run the registrar until SIGTERM/SIGINT."""

from __future__ import annotations

from pfactory.bus.app import configure_process
from pfactory.registrar.settings import RegistrarSettings


def main() -> None:
    """Read settings from the environment and serve."""
    settings = RegistrarSettings()
    configure_process(settings.telemetry, "registrar", settings.log_level)  # before importing the app
    from pfactory.registrar.app import run

    run(settings)


if __name__ == "__main__":
    main()
