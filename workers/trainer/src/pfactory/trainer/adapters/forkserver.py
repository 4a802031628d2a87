"""A private, warm fork server, and what a forked run does before it calls the entry.

Starting a fresh interpreter that imports scikit-learn and pandas costs seconds; forking one that
already has them costs milliseconds. :class:`WarmForkServer` is the standard library's fork server
(``multiprocessing.forkserver``) with two changes: each launcher owns its own server, so its preload
list is honoured and ``stop()`` ends it (the module's global server is shared by everything in the
process and cannot be stopped), and a child does not re-run the parent's ``__main__`` (a worker's or
pytest's), which would cost time in every run.

This module is imported by the fork server itself, so it stays free of asyncio and the launcher.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from pathlib import Path
from typing import Any, cast

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
    "fairlearn.metrics",
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


def load_entry(entry: str) -> Callable[[list[str]], int]:
    """The function an ``module:function`` entry names."""
    module_name, _, function_name = entry.partition(":")
    function: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), function_name)
    return function


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def run_child(config: ChildConfig) -> None:
    """In the forked child: isolate, confine, then call the entry and exit with its status."""
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
    os.environ.clear()
    os.environ.update(config.env)
    os.environ.update({name: str(config.threads) for name in THREAD_ENV}, TMPDIR=str(scratch))
    import tempfile

    tempfile.tempdir = None  # forget the fork server's cached choice; TMPDIR is read again
    os.sched_setaffinity(0, config.cores)
    # the BLAS and OpenMP pools were loaded by the fork server: environment variables come too late
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    limits = threadpool_limits(limits=config.threads)
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
        raise SystemExit(EXIT_MEMORY_ERROR) from None
    finally:
        del limits
    raise SystemExit(code)


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
