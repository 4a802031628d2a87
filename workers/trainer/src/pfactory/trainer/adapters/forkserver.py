"""A private, warm fork server, and what a forked run does before it calls the entry.

Starting a fresh interpreter that imports scikit-learn and pandas costs seconds; forking one that
already has them costs milliseconds. :class:`WarmForkServer` is the standard library's fork server
(``multiprocessing.forkserver``) with two changes: each launcher owns its own server, so its preload
list is honoured and ``stop()`` ends it (the module's global server is shared by everything in the
process and cannot be stopped), and a child does not re-run the parent's ``__main__`` (a worker's or
pytest's), which would cost time in every run.

Even milliseconds add up for a small model: forking the server (a few hundred MB resident), the new
child's first writes to the pages it shares with the server (copied one fault at a time), finding the
BLAS and OpenMP pools. :func:`standby_child` does all that before its run is known: forked ahead, it
gets ready (optionally running the entry module's ``warm_up()``, so the pages a run writes are already
its own), says so, then waits for one :class:`ChildConfig` and runs it as :func:`run_child` would.

This module is imported by the fork server itself, so it stays free of asyncio and the launcher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

DEFAULT_PRELOAD = (  # what a training run imports; the entry's module is added to it
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "pyarrow.fs",
    "sklearn",
    "sklearn.base",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.preprocessing",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.calibration",
    "skops.io",
    "threadpoolctl",
    "pfactory.trainer.jobspec",
    "pfactory.trainer.runfiles",
)

EXIT_MEMORY_ERROR = 86
"""The child's exit status when the entry raised MemoryError (it hit its address-space limit)."""

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "LOKY_MAX_CPU_COUNT",
)


@dataclass(frozen=True)
class ChildConfig:
    """What a forked run is given; pickled to the fork server."""

    entry: str
    argv: list[str]
    workdir: str
    log_path: str
    cores: tuple[int, ...]
    threads: int
    address_space_bytes: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The config as JSON, as a standby child receives it."""
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ChildConfig:
        """The config :meth:`to_json` wrote."""
        fields = json.loads(data)
        return cls(**{**fields, "cores": tuple(fields["cores"])})


STANDBY_READY = b"ready"
"""What a standby child sends once it is ready to take its run."""


def load_entry(entry: str) -> Callable[[list[str]], int]:
    """The function an ``module:function`` entry names."""
    module_name, _, function_name = entry.partition(":")
    function: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), function_name)
    return function


def _vm_size() -> int:
    with open("/proc/self/statm", "rb") as statm:  # sizes in pages; the first is the address space
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


_found_pools: tuple[int, ThreadpoolController] | None = None


def thread_pools() -> ThreadpoolController:
    """The BLAS and OpenMP pools loaded in this process, looked for again only after new imports.

    Looking reads ``/proc/self/maps`` (5-8 ms in a process that has scikit-learn loaded); a pool's
    library arrives with an import, so while ``sys.modules`` has not grown since the last look, the
    controller found then still covers every pool.
    """
    global _found_pools
    if _found_pools is None or _found_pools[0] != len(sys.modules):
        _found_pools = (len(sys.modules), ThreadpoolController())
    return _found_pools[1]


def run_child(config: ChildConfig, report: Connection | None = None) -> None:
    """In the forked child: isolate, confine, then call the entry and exit with its status.

    With ``report``, the status is also sent there once the entry has returned and its output is
    flushed: the launcher need not wait for the kernel to tear down a process of a few hundred MB
    (several milliseconds) before it reads the result.
    """
    os.setsid()  # a session and group of its own: the launcher kills the whole group at once
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    log = os.open(config.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)  # a killed run still leaves its last lines
    os.chdir(config.workdir)
    scratch = Path(config.workdir) / "tmp"
    scratch.mkdir(exist_ok=True)
    _set_environment({**config.env, **dict.fromkeys(THREAD_ENV, str(config.threads)), "TMPDIR": str(scratch)})
    import tempfile

    tempfile.tempdir = None  # forget the fork server's cached choice; TMPDIR is read again
    os.sched_setaffinity(0, config.cores)
    # the BLAS and OpenMP pools were loaded by the fork server: environment variables come too late
    limits = thread_pools().limit(limits=config.threads)
    if config.address_space_bytes is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = _vm_size() + config.address_space_bytes
        resource.setrlimit(
            resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard)
        )
    try:
        code = load_entry(config.entry)(config.argv)
    except MemoryError:
        print("MemoryError: the run reached its memory limit (address space)", file=sys.stderr, flush=True)
        code = EXIT_MEMORY_ERROR
    finally:
        del limits
    if report is not None:
        with contextlib.suppress(OSError, MemoryError, ValueError):
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            report.send_bytes(b"%d" % code)
            report.close()
    raise SystemExit(code)


def read_report(report: Connection) -> int | None:
    """The exit status a child sent with :func:`run_child`, or None (none yet, or it ended without)."""
    try:
        if report.poll(0):
            return int(report.recv_bytes(16))
    except (EOFError, OSError, ValueError):
        pass
    return None


def _set_environment(wanted: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``wanted``, touching only what differs (most of it is the same)."""
    for name in [name for name in os.environ if name not in wanted]:
        del os.environ[name]
    for name, value in wanted.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def standby_child(orders: Connection, entry: str, warm_up: bool) -> None:
    """A child forked before its run: get ready, say so, wait for one :class:`ChildConfig`, run it.

    Ready means the thread pools found and, with ``warm_up``, the entry module's ``warm_up()`` (if it
    has one) called, so the pages a run writes are copied from the server now rather than one fault at
    a time during the run. The child runs one config, reporting its status on ``orders``, and ends;
    when the launcher closes ``orders`` instead (it stops, or lets this child go), it ends without
    running anything.
    """
    thread_pools()
    if warm_up:
        hook = getattr(importlib.import_module(entry.partition(":")[0]), "warm_up", None)
        if callable(hook):
            hook()
    try:
        orders.send_bytes(STANDBY_READY)
        config = ChildConfig.from_json(orders.recv_bytes())
    except (EOFError, OSError):
        orders.close()
        return
    run_child(config, orders)


def _noop() -> None:
    """A child that only proves the server is up and has finished preloading."""


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class _ServerPopen(popen_forkserver.Popen):
    """``popen_forkserver.Popen`` asking a given server rather than the module's global one."""

    _fds: list[int]  # set by popen_forkserver.Popen.__init__: descriptors to hand to the child

    def __init__(self, process_obj: Any, server: forkserver.ForkServer) -> None:
        self._server = server
        super().__init__(process_obj)

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        # the child runs a function of this module: the parent's __main__ is not needed there
        prep_data.pop("init_main_from_name", None)
        prep_data.pop("init_main_from_path", None)
        prep_data["start_method"] = "forkserver"
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, w = self._server.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, _close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class WarmForkServer:
    """A fork server of one's own, with modules preloaded; children fork from it in milliseconds."""

    def __init__(self, preload: Sequence[str]) -> None:
        self._server = forkserver.ForkServer()
        self._server.set_forkserver_preload(list(preload))
        self._context = context.ForkServerContext()

    def launch(self, target: Callable[..., None], *args: Any, name: str = "pf-run") -> popen_forkserver.Popen:
        """Fork a child running ``target(*args)``; blocks while the server is still preloading.

        Returns:
            The child's handle: ``pid``, ``sentinel`` (readable when it has exited) and ``poll()``.
        """
        self._ensure_running()
        process = self._context.Process(target=target, args=args, name=name)
        return _ServerPopen(process, self._server)

    def _ensure_running(self) -> None:
        """Start the server with one BLAS/OpenMP thread: its pools are what every run inherits.

        Left at their defaults, the pools numpy and scipy create at import spin extra threads in each
        forked run (tens of milliseconds of CPU per run on a small machine); a run that may use more
        cores raises its own limit with threadpoolctl.
        """
        server = cast(Any, self._server)
        if server._forkserver_pid is not None:
            return
        saved = {name: os.environ.get(name) for name in THREAD_ENV}
        os.environ.update(dict.fromkeys(THREAD_ENV, "1"))
        try:
            self._server.ensure_running()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def warm_up(self) -> None:
        """Start the server and wait until its preloads are imported (a no-op child proves it)."""
        child = self.launch(_noop, name="pf-warm-up")
        child.wait()
        child.close()

    def stop(self, timeout: float = 10.0) -> None:
        """End the server: it leaves once no child holds it open, or is killed after ``timeout`` s."""
        # ForkServer._stop (the standard library's own) waits without a limit for the last child
        server = cast(Any, self._server)
        with server._lock:
            pid = server._forkserver_pid
            if pid is None:
                return
            os.close(server._forkserver_alive_fd)
            deadline = time.monotonic() + timeout
            while os.waitpid(pid, os.WNOHANG)[0] == 0:
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.02)
            if not util.is_abstract_socket_namespace(server._forkserver_address):
                with contextlib.suppress(OSError):
                    os.unlink(server._forkserver_address)
            server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
