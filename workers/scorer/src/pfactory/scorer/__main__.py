"""``python -m pfactory.scorer [online]``: the batch worker, or with ``online`` the prediction API.

Both run until SIGTERM/SIGINT; settings come from the environment (``PF_SCORER_*`` for the
worker, ``PF_ONLINE_*`` for the API, ``PF_REGISTRY_*`` for both).
"""

from __future__ import annotations

import sys

from pfactory.bus.app import configure_process
from pfactory.scorer.settings import OnlineSettings, ScorerSettings

USAGE = "usage: python -m pfactory.scorer [online]  (no argument: the batch scoring worker)"


def main(argv: list[str] | None = None) -> int:
    """Read settings from the environment and serve the mode the arguments name.

    Args:
        argv: the arguments after the module name; None reads ``sys.argv``.

    Returns:
        The process exit code.
    """
    args = sys.argv[1:] if argv is None else argv
    if not args:
        settings = ScorerSettings()
        configure_process(settings.telemetry, "scorer", settings.log_level)  # before importing the app
        from pfactory.scorer.app import run

        run(settings)
        return 0
    if args == ["online"]:
        online = OnlineSettings()
        configure_process(online.telemetry, "scorer-online", "INFO")  # before importing the app
        from pfactory.scorer.online import serve

        serve(online)
        return 0
    print(f"unknown arguments {' '.join(args)!r}; {USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
