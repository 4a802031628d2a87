"""``python -m pfactory.trainer``: run the trainer until SIGTERM/SIGINT."""

from __future__ import annotations

from pfactory.trainer.app import run
from pfactory.trainer.settings import TrainerSettings


def main() -> None:
    """Read settings from the environment and serve."""
    run(TrainerSettings())


if __name__ == "__main__":
    main()
