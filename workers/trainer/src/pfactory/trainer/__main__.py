"""``python -m pfactory.trainer``: run the trainer service; ``… run-job SPEC`` runs one isolated run."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Serve the trainer, or run one training run when called as ``run-job SPEC``."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "run-job":
        from pfactory.trainer.job import main as run_job_main

        return run_job_main(args)
    if args:
        print(
            f"unknown command {args[0]!r}; use no arguments to serve, or 'run-job SPEC_URI'", file=sys.stderr
        )
        return 2
    from pfactory.bus.app import configure_process
    from pfactory.trainer.settings import TrainerSettings

    settings = TrainerSettings()
    configure_process(settings.telemetry, "trainer", settings.log_level)  # before importing the app
    from pfactory.trainer.app import run

    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
