"""``ProcessPodLauncher``: each run in a process of its own, forked from a warm fork server, with limits.

A run gets its own session and process group, its own scratch folder (cwd and ``TMPDIR``), its log
in ``run.log``, CPU affinity to ``ceil(resources.cpu)`` cores with the thread pools capped to match,
and three limits enforced from here: resident memory (the whole process group's RSS, polled from
``/proc`` every ``poll_interval`` seconds, killed at the limit), an optional address-space backstop
(``RLIMIT_AS``; a ``MemoryError`` reads as the memory limit too), and wall-clock time. Whatever the
child does, the worker only reads its exit status (as the child reports it, or from its exit).

Memory is counted as resident pages, including the preloaded libraries a child inherits from the
fork server: that is what a pod's memory limit charges too, so a limit means the same on both backends.

The launcher keeps one standby child forked ahead (see :func:`~.forkserver.standby_child`): a run
takes it once it is ready, so the fork and the child's first steps are off the run's critical path,
and the next one is forked as soon as a run has its child (or when a run ends, if that fork could
not happen). A standby runs one run at most and is never reused; while none is ready a run forks its
own child as before. A standby forked while a core has no run on it also runs the entry's
``warm_up()`` there, so the pages a run writes are its own before the run comes (a run arriving right
after the last one finds it ready); one forked while every core has a run does not, so that it never
takes CPU from them. A child reports its exit
status on a pipe once its entry has returned: the launcher does not wait for the kernel to tear the
process down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pfactory.contracts.configs import Resources
from pfactory.trainer import runfiles
from pfactory.trainer.adapters.forkserver import (
    DEFAULT_PRELOAD,
    EXIT_MEMORY_ERROR,
    STANDBY_READY,
    ChildConfig,
    WarmForkServer,
    read_report,
    run_child,
    standby_child,
)
from pfactory.trainer.jobspec import LOG_FILE, RESULT_FILE, RunResult, RunSpec
from pfactory.trainer.launcher import (
    RunOutcome,
    judge_exit,
    memory_limit_reason,
    parse_memory,
    tail_logs,
    time_limit_reason,
)

log = logging.getLogger(__name__)

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
    reported: int | None = None
    """The exit status the child reported before it exited (None: it exited, or was killed, without)."""


@dataclass
class _Standby:
    """A child forked ahead of its run, and the launcher's end of the pipe it takes its orders from."""

    child: Any
    orders: Connection
    ready: bool = False

    def state(self) -> str:
        """``ready`` (said so and still waiting), ``preparing`` or ``gone``."""
        try:
            if not self.ready and self.orders.poll(0):
                self.ready = self.orders.recv_bytes() == STANDBY_READY
        except (EOFError, OSError):
            return "gone"
        if self.child.poll() is not None:
            return "gone"
        return "ready" if self.ready else "preparing"

    def start(self, config: ChildConfig) -> bool:
        """Hand the child its run (it reports its exit status on ``orders``); False when it is gone."""
        try:
            self.orders.send_bytes(config.to_json())
        except OSError:
            return False
        return True

    def discard(self) -> None:
        """End the child without running anything (it is no group leader yet: its pid alone)."""
        self.orders.close()
        if self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child.pid, signal.SIGKILL)
            self.child.wait(10)
        self.child.close()


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
        standby: bool = True,
        standby_warm_up: bool = True,
    ) -> None:
        """Set up the launcher; the fork server starts on the first run or on :meth:`start`.

        Args:
            scratch_root: where runs whose output is remote (``s3://``) get their scratch folder.
            entry: ``module:function`` called as ``function(["run-job", SPEC_URI]) -> exit status``.
            preload: modules the fork server imports once, so each run starts with them loaded.
            max_parallel: runs at once; more wait their turn (None: as many as asked).
            poll_interval: seconds between memory and time checks.
            address_space_limit: also cap the child's address space at its start size + the limit.
            standby: keep a child forked ahead for the next run (False: fork each run as it starts).
            standby_warm_up: let a standby forked while a core has no run on it call the entry
                module's ``warm_up()`` before it says it is ready.
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
        self._standby_wanted = standby
        self._standby_warm_up = standby_warm_up
        self._standby: _Standby | None = None
        self._standby_lock = threading.Lock()
        self._forking_standby: threading.Thread | None = None  # a thread: it outlives any one event loop
        self._active = 0
        self._busy_cores = 0  # cores the running children are pinned to, counted with repeats

    async def start(self) -> None:
        """Start the fork server and wait for its preloads, so the first run is warm too."""
        await asyncio.to_thread(self._server.warm_up)
        self._want_standby()
        if self._forking_standby is not None:
            await asyncio.to_thread(self._forking_standby.join)

    async def run(self, spec: RunSpec, *, resources: Resources, model_name: str) -> RunOutcome:
        """Run ``spec`` in a forked child with ``resources`` as its limits; see :class:`PodLauncher`."""
        if self._closed:
            raise RuntimeError("this ProcessPodLauncher is closed; build a new one")
        async with self._slots or contextlib.nullcontext():
            cores = min(len(self._cpus), max(1, math.ceil(resources.cpu)))
            self._active += 1
            self._busy_cores += cores
            try:
                outcome = await self._run(spec, resources)
            finally:
                self._active -= 1
                self._busy_cores -= cores
        self._want_standby()  # for the next run
        return outcome

    async def _run(self, spec: RunSpec, resources: Resources) -> RunOutcome:
        started = time.monotonic()
        endpoint, region = spec.feature_store.endpoint_url, spec.feature_store.region
        limit = parse_memory(resources.memory)
        local = runfiles.local_folder(spec.output_uri)
        workdir = local or self._scratch_root / _safe(spec.job_id) / _safe(spec.run_id)
        spec_uri = await asyncio.to_thread(self._prepare, spec, workdir, endpoint, region)
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
        launching = asyncio.ensure_future(asyncio.to_thread(self._start_child, config, name))
        try:
            child, report = await asyncio.shield(launching)
        except asyncio.CancelledError:  # the fork happens anyway: it must not outlive the cancelled run
            child, report = await launching
            _kill_group(child.pid)
            child.close()
            report.close()
            raise
        self._want_standby()  # the next run's child, forked (and warmed on a free core) while this one goes
        try:
            watch = await self._supervise(child, report, limit, resources.timeout_seconds)
        finally:
            child.close()
            report.close()
        log_text, (result, problem) = await asyncio.to_thread(
            self._collect, workdir, local is None, spec.output_uri, endpoint, region
        )
        logs = tail_logs(log_text)
        exit_code: int = next(
            (code for code in (watch.reported, child.returncode) if code is not None), -signal.SIGKILL
        )
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

    def _start_child(self, config: ChildConfig, name: str) -> tuple[Any, Connection]:
        """The child running ``config`` and the pipe it reports its exit status on: the standby when
        it is ready, else a child forked now."""
        with self._standby_lock:
            standby, self._standby = self._standby, None
        if standby is not None:
            state = standby.state()
            if state == "ready" and standby.start(config):
                return standby.child, standby.orders
            if state == "preparing":  # kept for the next run rather than waited for
                self._keep_standby(standby)
            else:
                standby.discard()
        report, theirs = Pipe(duplex=False)
        try:
            return self._server.launch(run_child, config, theirs, name=name), report
        except BaseException:
            report.close()
            raise
        finally:
            theirs.close()

    def _want_standby(self) -> None:
        """Fork a standby child unless there is one, or one is being forked, or standbys are off."""
        if not self._standby_wanted or self._closed or self._standby is not None:
            return
        if self._forking_standby is not None and self._forking_standby.is_alive():
            return
        # warming up costs a small run's CPU: only on a core no run is pinned to, so it never slows one
        warm_up = self._standby_warm_up and self._busy_cores < len(self._cpus)
        self._forking_standby = threading.Thread(
            target=self._fork_standby, args=(warm_up,), name="pf-fork-standby", daemon=True
        )
        self._forking_standby.start()

    def _fork_standby(self, warm_up: bool) -> None:
        ours, theirs = Pipe(duplex=True)
        try:
            child = self._server.launch(standby_child, theirs, self._entry, warm_up, name="pf-standby")
        except Exception as error:  # the next run forks its own child, as without a standby
            log.warning("could not fork a standby child: %r", error)
            ours.close()
            return
        finally:
            theirs.close()
        self._keep_standby(_Standby(child, ours))

    def _keep_standby(self, standby: _Standby) -> None:
        with self._standby_lock:
            if not self._closed and self._standby is None:
                self._standby = standby
                return
        standby.discard()

    def _prepare(self, spec: RunSpec, workdir: Path, endpoint: str | None, region: str | None) -> str:
        workdir.mkdir(parents=True, exist_ok=True)
        # a result left by an earlier attempt of this run must not be mistaken for this one's
        runfiles.remove(spec.output_uri, RESULT_FILE, endpoint_url=endpoint, region=region)
        return runfiles.write_spec(spec, endpoint_url=endpoint, region=region)

    def _collect(
        self, workdir: Path, remote: bool, output_uri: str, endpoint: str | None, region: str | None
    ) -> tuple[str, tuple[RunResult | None, str | None]]:
        """The run's log and result (see ``runfiles.collect_result``); then its scratch is tidied."""
        log_text = _read_log(workdir / LOG_FILE)
        result = runfiles.collect_result(output_uri, endpoint_url=endpoint, region=region)
        self._tidy(workdir, remote, output_uri, endpoint, region)
        return log_text, result

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

    async def _supervise(self, child: Any, report: Connection, limit: int, timeout_s: int) -> _Watch:
        """Wait for the child's exit (or its report of it) without blocking the loop; kill its group at
        a limit or on cancel."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        watch = _Watch()

        def on_exit() -> None:
            loop.remove_reader(child.sentinel)
            if not exited.done():
                exited.set_result(None)

        def on_report() -> None:
            loop.remove_reader(report.fileno())  # one message, or the end of the pipe
            watch.reported = read_report(report)
            if watch.reported is not None and not exited.done():
                exited.set_result(None)

        loop.add_reader(child.sentinel, on_exit)
        loop.add_reader(report.fileno(), on_report)
        self._running[child.pid] = exited
        deadline = time.monotonic() + timeout_s
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
            loop.remove_reader(report.fileno())
            self._running.pop(child.pid, None)
        # whatever the run left behind in its group goes too (the group outlives its leader); a leader
        # that reported is done, whatever is left of its exit
        _kill_group(child.pid, leader_running=False)
        child.poll()
        return watch

    async def aclose(self) -> None:
        """Kill every run still going and the standby child, then stop the fork server."""
        self._closed = True
        if self._forking_standby is not None:
            await asyncio.to_thread(self._forking_standby.join)
        with self._standby_lock:
            standby, self._standby = self._standby, None
        if standby is not None:
            await asyncio.to_thread(standby.discard)
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
