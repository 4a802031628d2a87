"""``python -m pfactory.materialiser``: run the materialiser until SIGTERM/SIGINT."""

from __future__ import annotations

from pfactory.materialiser.app import run
from pfactory.materialiser.settings import MaterialiserSettings


def main() -> None:
    """Read settings from the environment and serve."""
    run(MaterialiserSettings())


if __name__ == "__main__":
    main()
