"""``ProcessPodLauncher``: each run in a process of its own, forked from a warm fork server, with limits.

A run gets its own session and process group, its own scratch folder (cwd and ``TMPDIR``), its log
in ``run.log``, CPU affinity to ``ceil(resources.cpu)`` cores with the thread pools capped to match,
and three limits enforced from here: resident memory (the whole process group's RSS, polled from
``/proc`` every ``poll_interval`` seconds, killed at the limit), an optional address-space backstop
(``RLIMIT_AS``; a ``MemoryError`` reads as the memory limit too), and wall-clock time. Whatever the
child does, the worker only reads its exit status.

Memory is counted as resident pages, including the preloaded libraries a child inherits from the
fork server: that is what a pod's memory limit charges too, so a limit means the same on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfactory.contracts.configs import Resources
from pfactory.trainer import runfiles
from pfactory.trainer.adapters.forkserver import (
    DEFAULT_PRELOAD,
    EXIT_MEMORY_ERROR,
    ChildConfig,
    WarmForkServer,
    run_child,
)
from pfactory.trainer.jobspec import LOG_FILE, RESULT_FILE, RunSpec
from pfactory.trainer.launcher import (
    RunOutcome,
    judge_exit,
    memory_limit_reason,
    parse_memory,
    tail_logs,
    time_limit_reason,
)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class _ProcTable:
    """Resident memory per process group, from one scan of ``/proc`` shared by every run per tick."""

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._at = -math.inf
        self._groups: dict[int, int] = {}
        self._processes: dict[int, tuple[int, int]] = {}

    def group_rss(self, leader: int) -> int:
        """Bytes resident in ``leader``'s group, counting the leader even before it called setsid."""
        if time.monotonic() - self._at > self._max_age:
            self._scan()
        group, rss = self._processes.get(leader, (leader, 0))
        return self._groups.get(leader, 0) + (rss if group != leader else 0)

    def _scan(self) -> None:
        groups: dict[int, int] = {}
        processes: dict[int, tuple[int, int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as stat:
                    data = stat.read()
            except OSError:  # gone since the listing
                continue
            fields = data[data.rindex(b")") + 2 :].split()
            if fields[0] == b"Z":
                continue
            group, rss = int(fields[2]), int(fields[21]) * _PAGE
            processes[int(name)] = (group, rss)
            groups[group] = groups.get(group, 0) + rss
        self._groups, self._processes, self._at = groups, processes, time.monotonic()


def _kill_group(pid: int, *, leader_running: bool = True) -> None:
    """SIGKILL the run's process group (the child leads it once it has called setsid)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        if leader_running:  # not a group leader yet: the child itself is all there is
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class _Watch:
    killed_for: str | None = None
    peak: int = 0


class ProcessPodLauncher:
    """Runs each training run in a process forked from a warm fork server, with limits."""

    def __init__(
        self,
        scratch_root: Path,
        *,
        entry: str = "pfactory.trainer.job:main",
        preload: Sequence[str] = DEFAULT_PRELOAD,
        max_parallel: int | None = None,
        poll_interval: float = 0.05,
        address_space_limit: bool = True,
    ) -> None:
        """Set up the launcher; the fork server starts on the first run or on :meth:`start`.

        Args:
            scratch_root: where runs whose output is remote (``s3://``) get their scratch folder.
            entry: ``module:function`` called as ``function(["run-job", SPEC_URI]) -> exit status``.
            preload: modules the fork server imports once, so each run starts with them loaded.
            max_parallel: runs at once; more wait their turn (None: as many as asked).
            poll_interval: seconds between memory and time checks.
            address_space_limit: also cap the child's address space at its start size + the limit.
        """
        self._scratch_root = scratch_root
        self._entry = entry
        entry_module = entry.partition(":")[0]
        self._server = WarmForkServer([*preload, "pfactory.trainer.adapters.forkserver", entry_module])
        self._slots = asyncio.Semaphore(max_parallel) if max_parallel else None
        self._poll = poll_interval
        self._address_space_limit = address_space_limit
        self._procs = _ProcTable(max_age=poll_interval * 0.8)
        self._cpus = sorted(os.sched_getaffinity(0))
        self._next_cpu = 0
        self._running: dict[int, asyncio.Future[None]] = {}
        self._closed = False

    async def start(self) -> None:
        """Start the fork server and wait for its preloads, so the first run is warm too."""
        await asyncio.to_thread(self._server.warm_up)

    async def run(self, spec: RunSpec, *, resources: Resources, model_name: str) -> RunOutcome:
        """Run ``spec`` in a forked child with ``resources`` as its limits; see :class:`PodLauncher`."""
        if self._closed:
            raise RuntimeError("this ProcessPodLauncher is closed; build a new one")
        async with self._slots or contextlib.nullcontext():
            return await self._run(spec, resources)

    async def _run(self, spec: RunSpec, resources: Resources) -> RunOutcome:
        started = time.monotonic()
        endpoint, region = spec.feature_store.endpoint_url, spec.feature_store.region
        limit = parse_memory(resources.memory)
        local = runfiles.local_folder(spec.output_uri)
        workdir = local or self._scratch_root / _safe(spec.job_id) / _safe(spec.run_id)
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        spec_uri = await asyncio.to_thread(self._prepare, spec, endpoint, region)
        cores = self._take_cores(max(1, math.ceil(resources.cpu)))
        config = ChildConfig(
            entry=self._entry,
            argv=["run-job", spec_uri],
            workdir=str(workdir),
            log_path=str(workdir / LOG_FILE),
            cores=cores,
            threads=max(1, min(spec.threads, len(cores))),
            address_space_bytes=limit if self._address_space_limit else None,
            # the worker's environment as it is now (the fork server's is from its start)
            env={**os.environ, **({"AWS_ENDPOINT_URL_S3": endpoint} if endpoint else {})},
        )
        name = f"pf-run-{_safe(spec.job_id)}-{_safe(spec.run_id)}"
        launching = asyncio.ensure_future(
            asyncio.to_thread(self._server.launch, run_child, config, name=name)
        )
        try:
            child = await asyncio.shield(launching)
        except asyncio.CancelledError:  # the fork happens anyway: it must not outlive the cancelled run
            child = await launching
            _kill_group(child.pid)
            child.close()
            raise
        try:
            watch = await self._supervise(child, limit, resources.timeout_seconds)
        finally:
            child.close()
        logs = tail_logs(await asyncio.to_thread(_read_log, workdir / LOG_FILE))
        result, problem = await asyncio.to_thread(
            runfiles.collect_result, spec.output_uri, endpoint_url=endpoint, region=region
        )
        await asyncio.to_thread(self._tidy, workdir, local is None, spec.output_uri, endpoint, region)
        exit_code: int = child.returncode if child.returncode is not None else -signal.SIGKILL
        reason: str | None
        if self._closed and exit_code == -signal.SIGKILL:
            ok, reason = False, "the run was stopped because the trainer shut down while it was going"
        elif watch.killed_for == "memory":
            ok, reason = False, memory_limit_reason(resources.memory, watch.peak)
        elif exit_code == EXIT_MEMORY_ERROR:  # an allocation was refused before RSS showed it
            ok, reason = False, memory_limit_reason(resources.memory, None)
        elif watch.killed_for == "time":
            ok, reason = False, time_limit_reason(resources.timeout_seconds)
        else:
            ok, reason = judge_exit(exit_code, result, problem, logs)
        return RunOutcome(
            ok=ok,
            exit_code=exit_code,
            reason=reason,
            duration_s=time.monotonic() - started,
            logs=logs,
            peak_memory_bytes=watch.peak or None,
            result=result,
        )

    def _prepare(self, spec: RunSpec, endpoint: str | None, region: str | None) -> str:
        # a result left by an earlier attempt of this run must not be mistaken for this one's
        runfiles.remove(spec.output_uri, RESULT_FILE, endpoint_url=endpoint, region=region)
        return runfiles.write_spec(spec, endpoint_url=endpoint, region=region)

    def _tidy(
        self, workdir: Path, remote: bool, output_uri: str, endpoint: str | None, region: str | None
    ) -> None:
        if remote:  # the log joins the run's outputs; the scratch folder goes
            with contextlib.suppress(OSError):
                log = (workdir / LOG_FILE).read_bytes()
                runfiles.write_bytes(output_uri, LOG_FILE, log, endpoint_url=endpoint, region=region)
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            shutil.rmtree(workdir / "tmp", ignore_errors=True)

    def _take_cores(self, count: int) -> tuple[int, ...]:
        """``count`` cores, rotating through the allowed ones so concurrent runs spread out."""
        count = min(count, len(self._cpus))
        first = self._next_cpu
        self._next_cpu = (first + count) % len(self._cpus)
        return tuple(sorted(self._cpus[(first + i) % len(self._cpus)] for i in range(count)))

    async def _supervise(self, child: Any, limit: int, timeout_s: int) -> _Watch:
        """Wait for the child's exit without blocking the loop; kill its group at a limit or on cancel."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            loop.remove_reader(child.sentinel)
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(child.sentinel, on_exit)
        self._running[child.pid] = exited
        deadline = time.monotonic() + timeout_s
        watch = _Watch()
        try:
            while not exited.done():
                rss = self._procs.group_rss(child.pid)
                watch.peak = max(watch.peak, rss)
                if rss > limit:
                    watch.killed_for = "memory"
                elif time.monotonic() > deadline:
                    watch.killed_for = "time"
                if watch.killed_for:
                    _kill_group(child.pid)
                    await exited
                else:
                    await asyncio.wait({exited}, timeout=self._poll)
        except BaseException:  # cancelled: nothing of the run may outlive it
            _kill_group(child.pid)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(exited), timeout=10)
            raise
        finally:
            loop.remove_reader(child.sentinel)
            self._running.pop(child.pid, None)
        # whatever the run left behind in its group goes too (the group outlives its leader)
        _kill_group(child.pid, leader_running=False)
        child.poll()
        return watch

    async def aclose(self) -> None:
        """Kill every run still going, then stop the fork server."""
        self._closed = True
        for pid in list(self._running):
            _kill_group(pid)
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=10)
        await asyncio.to_thread(self._server.stop)


def _safe(name: str) -> str:
    return _UNSAFE.sub("-", name).strip(".-")[:100] or "run"


def _read_log(path: Path) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 64_000))
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
