"""Container HEALTHCHECK: exit 0 when one of the named ports answers ``GET /health`` with 200.

Usage (the images' ``HEALTHCHECK CMD``)::

    python /opt/pfactory/healthcheck.py PF_SCORER_HEALTH_PORT=8105 [PF_ONLINE_PORT=8106 ...]

Each argument is ``ENV_VAR=DEFAULT``: the port is read from that environment variable, as the
service reads it, else the default, so an image run with another port stays checked. The slim
runtime images carry no curl; this uses only the standard library. Exit 1 names what failed.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(port: int, timeout_s: float = 4.0) -> str | None:
    """Return None when 127.0.0.1:port answers /health with 200, else why not."""
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return f"{url} answered {error.code}"
    except OSError as error:
        return f"{url} unreachable: {error}"
    return None if status == 200 else f"{url} answered {status}"


def main(argv: list[str]) -> int:
    """Check each ``ENV_VAR=DEFAULT`` port; 0 if any is healthy, 1 if none, 2 for bad arguments."""
    if not argv:
        print("usage: healthcheck.py ENV_VAR=DEFAULT_PORT [...]", file=sys.stderr)
        return 2
    failures: list[str] = []
    for spec in argv:
        name, sep, default = spec.partition("=")
        raw = os.environ.get(name, default) if sep else spec
        try:
            port = int(raw)
        except ValueError:
            print(f"healthcheck: port {raw!r} (from {spec!r}) is not an integer", file=sys.stderr)
            return 2
        problem = check(port)
        if problem is None:
            return 0
        failures.append(problem)
    print("healthcheck: " + "; ".join(failures), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
