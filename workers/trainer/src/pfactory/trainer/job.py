"""The run entrypoint: ``python -m pfactory.trainer run-job SPEC_URI`` (process and pod backends alike).

Reads a :class:`~pfactory.trainer.jobspec.RunSpec`, loads the training data, assembles and fits the
pipeline, evaluates it, and writes ``model.skops``, ``reference.json`` and ``result.json`` into the
spec's output folder (see :mod:`pfactory.trainer.jobspec`).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """``run-job SPEC_URI``: execute one run; 0 when it succeeded, 1 when it failed with a result."""
    if len(argv) != 2 or argv[0] != "run-job":
        print("usage: python -m pfactory.trainer run-job SPEC_URI", file=sys.stderr)
        return 2
    raise NotImplementedError("run-job is being built (issue #5)")
