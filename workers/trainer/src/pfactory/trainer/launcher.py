"""How one isolated training run is launched: the ``PodLauncher`` role and what it reports.

Two backends implement the role with the same entrypoint (``python -m pfactory.trainer run-job SPEC``):
:class:`~pfactory.trainer.adapters.process.ProcessPodLauncher` (a warm fork server, the default) and
:class:`~pfactory.trainer.adapters.kubernetes.KubernetesPodLauncher` (one pod per run). The reasons
they give for a failed run are phrased here, once, so a data scientist reads the same words whichever
backend ran the job.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from pfactory.contracts.configs import Resources
from pfactory.trainer.jobspec import RunResult, RunSpec

LOG_TAIL_LINES = 200
LOG_TAIL_BYTES = 20_000


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended, as the job record keeps it."""

    ok: bool
    """True when the entry exited 0 and wrote a successful ``result.json``."""
    exit_code: int | None
    """The entry's exit status; negative ``-N`` when signal N killed it; None when it never ran."""
    reason: str | None
    """None when ok; otherwise why, phrased for the data scientist."""
    duration_s: float
    """Wall-clock seconds from ``run()`` to the end, including the launch."""
    logs: str
    """The tail of the run's stdout and stderr (about 200 lines / 20 kB)."""
    peak_memory_bytes: int | None = None
    """The largest resident memory seen, when the backend can measure it."""
    result: RunResult | None = None
    """The run's ``result.json``, when it wrote one."""


class PodLauncher(Protocol):
    """Runs a training run in isolation and reports how it ended; never raises for what the run did."""

    async def run(self, spec: RunSpec, *, resources: Resources, model_name: str) -> RunOutcome:
        """Write ``spec.json`` into ``spec.output_uri``, run the entry in isolation, wait, report.

        Args:
            spec: the run; its ``output_uri`` receives ``spec.json`` and the run's outputs.
            resources: the limits the run gets (CPU, memory, wall-clock time, GPUs).
            model_name: the model's name, for labels and logs.

        Returns:
            The outcome; a crash, timeout or memory exhaustion is an outcome with a reason, not an error.
            Cancelling the call stops the run and leaves nothing running.
        """
        ...

    async def aclose(self) -> None:
        """Stop every run still going and release the backend (fork server, API client)."""
        ...


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
_FACTORS: dict[str | None, int] = {
    None: 1,
    **{suffix: 1024 ** (i + 1) for i, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{suffix: 1000 ** (i + 1) for i, suffix in enumerate(("k", "M", "G", "T", "P", "E"))},
    "K": 1000,
}


def parse_memory(quantity: str) -> int:
    """Bytes in a Kubernetes memory quantity such as ``4Gi``, ``300Mi``, ``1.5G`` or ``512``.

    Raises:
        ValueError: not a quantity; the message says how to write one.
    """
    match = _QUANTITY.match(quantity.strip())
    if match is None:
        raise ValueError(
            f"memory {quantity!r} is not a quantity like '4Gi', '300Mi' or '1.5G' (spec.resources.memory)"
        )
    number, suffix = match.groups()
    return int(-(-Decimal(number) * _FACTORS[suffix] // 1))  # rounded up: a limit is never loosened


def format_memory(size: int) -> str:
    """A byte count the way people read it: ``312Mi``, ``1.5Gi``, ``800Ki``."""
    for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + suffix
    return f"{size}B"


def memory_limit_reason(limit: str, peak_bytes: int | None) -> str:
    """Why a run that ran out of memory failed."""
    peak = f" (peak {format_memory(peak_bytes)} resident)" if peak_bytes else ""
    return (
        f"the run exceeded its memory limit of {limit}{peak}; raise spec.resources.memory or reduce the "
        "data (a shorter training window, fewer features)"
    )


def time_limit_reason(seconds: int) -> str:
    """Why a run that ran out of time failed."""
    return (
        f"the run exceeded its time limit of {seconds} s (spec.resources.timeout_seconds); raise it, or make "
        "the fit cheaper (fewer trials, a smaller model, less data)"
    )


def exit_reason(exit_code: int, logs: str) -> str:
    """Why a run that ended without a result failed, from its exit status and the last log line."""
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        if -exit_code == signal.SIGKILL:
            return f"the run was killed with {name} from outside (the machine may have run out of memory)"
        return f"the run crashed with signal {name}; a native library failed, see the run's log"
    last = next((line.strip() for line in reversed(logs.splitlines()) if line.strip()), "")
    said = f"; its log ends with: {last[:500]}" if last else "; its log is empty"
    if exit_code == 0:
        return f"the run exited without writing result.json{said}"
    return f"the run exited with code {exit_code} without writing result.json{said}"


def tail_logs(text: str, *, max_lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_BYTES) -> str:
    """The last ``max_lines`` lines of ``text``, no more than about ``max_bytes`` bytes."""
    if len(text) > max_bytes:
        text = text[-max_bytes:].split("\n", 1)[-1]
    return "\n".join(text.splitlines()[-max_lines:])


def judge_exit(
    exit_code: int, result: RunResult | None, problem: str | None, logs: str
) -> tuple[bool, str | None]:
    """``(ok, reason)`` for a run that ended on its own (not stopped by the launcher's limits).

    Args:
        exit_code: the entry's exit status (negative: killed by that signal).
        result: its ``result.json``, when present and valid.
        problem: why ``result.json`` could not be read, when it exists but is not a valid result.
        logs: the run's log tail, quoted when nothing else explains the failure.
    """
    if result is not None:
        if result.ok and exit_code == 0:
            return True, None
        if not result.ok:
            return False, result.reason or f"the run failed at stage {result.stage!r} without giving a reason"
        return (
            False,
            f"the run wrote a successful result.json but then ended with status {exit_code}; see its log",
        )
    return False, problem or exit_reason(exit_code, logs)
