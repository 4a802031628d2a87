"""ProcessPodLauncher's standby child: forked ahead, taken by one run only, replaced, never left behind.

This module is also the runs' entry (``entry`` hands over to ``isolation_entries``) and has the
``warm_up()`` hook a standby calls: it leaves a file named after the standby's pid, so a test sees
which standbys warmed up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pfactory.contracts.configs import Resources
from pfactory.trainer.adapters.process import ProcessPodLauncher
from pfactory.trainer.jobspec import RunSpec, StoreLocation
from pfactory.trainer.launcher import RunOutcome
from tests.workers.trainer import isolation_entries

ENTRY = "tests.workers.trainer.test_run_standby:entry"
WARMED = "PF_TEST_STANDBY_WARMED"

LIGHT = ("pfactory.trainer.jobspec", "pfactory.trainer.runfiles")
"""What these entries need: the standby mechanics do not depend on scikit-learn being preloaded, and a
fork server without it starts in a second instead of several."""


def entry(argv: list[str]) -> int:
    """The runs' entry: the isolation entries, by ``spec.params.behaviour``, or ``linger``."""
    spec = isolation_entries._spec(argv)
    if spec.params.get("behaviour") == "linger":  # done, but a thread would keep the process alive
        threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()
        return isolation_entries._finish(spec, ok=True, pid=os.getpid())
    return isolation_entries.dispatch(argv)


def warm_up() -> None:
    """What a standby calls before it says it is ready: a file named after its pid."""
    folder = os.environ.get(WARMED)
    if folder:
        Path(folder, str(os.getpid())).touch()


@pytest.fixture
def warmed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The folder the standbys' warm-ups mark (the fork server starts with this environment)."""
    folder = tmp_path / "warmed"
    folder.mkdir()
    monkeypatch.setenv(WARMED, str(folder))
    yield folder


def _spec(tmp_path: Path, behaviour: str) -> RunSpec:
    run = uuid.uuid4().hex[:8]
    return RunSpec(
        job_id=f"job-{run}",
        run_id="trial-000",
        config={"kind": "Model"},
        params={"behaviour": behaviour},
        feature_store=StoreLocation(root="/nonexistent/features"),
        output_uri=str(tmp_path / run),
    )


async def _run(launcher: ProcessPodLauncher, spec: RunSpec) -> RunOutcome:
    resources = Resources(cpu=1, memory="1Gi", timeout_seconds=60)
    return await launcher.run(spec, resources=resources, model_name="credit_default")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


async def _until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _ready_standby(launcher: ProcessPodLauncher) -> int:
    """The pid of the launcher's standby once it has said it is ready."""

    def ready() -> bool:
        standby = launcher._standby
        return standby is not None and standby.state() == "ready"

    await _until(ready, "a ready standby child")
    assert launcher._standby is not None
    pid: int = launcher._standby.child.pid
    return pid


async def _taken(launcher: ProcessPodLauncher, pid: int) -> None:
    """Until a run has taken the standby ``pid``."""

    def gone() -> bool:
        standby = launcher._standby
        return standby is None or standby.child.pid != pid

    await _until(gone, f"a run to take the standby {pid}")


async def test_a_run_takes_the_ready_standby_once_and_the_next_run_gets_a_new_one(
    tmp_path: Path, warmed: Path
) -> None:
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY, preload=LIGHT)
    try:
        await launcher.start()
        first = await _ready_standby(launcher)
        outcome = await _run(launcher, _spec(tmp_path, "probe"))
        assert outcome.ok and outcome.result is not None, outcome
        metrics = outcome.result.metrics
        assert metrics["pid"] == first  # the standby ran it, in a session of its own as a fresh fork would
        assert metrics["sid"] == metrics["pgid"] == first
        await _until(lambda: not _alive(first), "the run's process to be gone")  # killed once it reported

        second = await _ready_standby(launcher)
        assert second != first
        outcome = await _run(launcher, _spec(tmp_path, "probe"))
        assert outcome.ok and outcome.result is not None and outcome.result.metrics["pid"] == second
        assert (warmed / str(first)).exists() and (warmed / str(second)).exists()  # forked while idle
    finally:
        await launcher.aclose()


async def test_a_run_is_over_when_its_entry_returns_even_if_its_process_lingers(tmp_path: Path) -> None:
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY, preload=LIGHT)
    try:
        await launcher.start()
        started = time.monotonic()
        outcome = await asyncio.wait_for(_run(launcher, _spec(tmp_path, "linger")), timeout=30)
        assert outcome.ok and outcome.exit_code == 0 and outcome.result is not None, outcome
        assert time.monotonic() - started < 30  # not the 60 s timeout
        pid = outcome.result.metrics["pid"]
        await _until(lambda: not _alive(pid), "the lingering process to go with its group")
    finally:
        await launcher.aclose()


async def test_a_standby_that_died_is_replaced_and_the_run_forks_its_own_child(tmp_path: Path) -> None:
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY, preload=LIGHT)
    try:
        await launcher.start()
        dead = await _ready_standby(launcher)
        os.kill(dead, signal.SIGKILL)
        await _until(lambda: not _alive(dead), "the standby to die")

        outcome = await _run(launcher, _spec(tmp_path, "probe"))
        assert outcome.ok and outcome.result is not None, outcome
        assert outcome.result.metrics["pid"] != dead
        assert await _ready_standby(launcher) not in (dead, outcome.result.metrics["pid"])
    finally:
        await launcher.aclose()


async def test_a_standby_forked_while_every_core_has_a_run_does_not_warm_up(
    tmp_path: Path, warmed: Path
) -> None:
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY, preload=LIGHT, standby_warm_up=True)
    launcher._cpus = launcher._cpus[:1]  # a one-core machine: the run below occupies every core
    try:
        await launcher.start()
        idle = await _ready_standby(launcher)
        going = asyncio.create_task(_run(launcher, _spec(tmp_path, "sleep_forever")))  # takes the standby
        await _taken(launcher, idle)
        busy = await _ready_standby(launcher)  # forked as the run got its child
        assert busy != idle and not going.done()
        assert (warmed / str(idle)).exists() and not (warmed / str(busy)).exists()
        going.cancel()
        with pytest.raises(asyncio.CancelledError):
            await going
    finally:
        await launcher.aclose()


async def test_the_next_standby_warms_up_on_a_free_core_while_a_run_goes(
    tmp_path: Path, warmed: Path
) -> None:
    """A run arriving right after the last one finds a warm child, not one still warming up."""
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY, preload=LIGHT, standby_warm_up=True)
    assert len(launcher._cpus) >= 2, "this test needs two cores (CI runs on two)"
    try:
        await launcher.start()
        first = await _ready_standby(launcher)
        going = asyncio.create_task(_run(launcher, _spec(tmp_path, "sleep_forever")))  # takes the standby
        await _taken(launcher, first)
        second = await _ready_standby(launcher)
        assert second != first and not going.done()  # ready while the first run still goes
        assert (warmed / str(second)).exists()
        going.cancel()
        with pytest.raises(asyncio.CancelledError):
            await going
    finally:
        await launcher.aclose()


async def test_closing_the_launcher_ends_its_standby_and_a_closed_launcher_forks_none(tmp_path: Path) -> None:
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY, preload=LIGHT)
    await launcher.start()
    standby = await _ready_standby(launcher)
    await launcher.aclose()
    assert not _alive(standby)
    assert launcher._standby is None


async def test_without_standby_each_run_forks_its_own_child(tmp_path: Path) -> None:
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY, preload=LIGHT, standby=False)
    try:
        await launcher.start()
        outcome = await _run(launcher, _spec(tmp_path, "probe"))
        assert outcome.ok, outcome
        assert launcher._standby is None and launcher._forking_standby is None
    finally:
        await launcher.aclose()
