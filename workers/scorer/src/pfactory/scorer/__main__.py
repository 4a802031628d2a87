"""``python -m pfactory.scorer``: run the scorer until SIGTERM/SIGINT."""

from __future__ import annotations

from pfactory.scorer.app import run
from pfactory.scorer.settings import ScorerSettings


def main() -> None:
    """Read settings from the environment and serve."""
    run(ScorerSettings())


if __name__ == "__main__":
    main()
