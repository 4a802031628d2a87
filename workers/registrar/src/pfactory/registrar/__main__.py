"""``python -m pfactory.registrar``: run the registrar until SIGTERM/SIGINT."""

from __future__ import annotations

from pfactory.registrar.app import run
from pfactory.registrar.settings import RegistrarSettings


def main() -> None:
    """Read settings from the environment and serve."""
    run(RegistrarSettings())


if __name__ == "__main__":
    main()
