"""ProcessPodLauncher: real forked runs with real limits; every failure is an outcome, never the worker's.

The entries are ``tests.workers.trainer.isolation_entries`` (chosen per run through ``spec.params``),
reading their spec and writing their result through the same run files as the real job.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyarrow import fs

from pfactory.contracts.configs import Resources
from pfactory.trainer import runfiles
from pfactory.trainer.adapters.process import ProcessPodLauncher
from pfactory.trainer.jobspec import LOG_FILE, RESULT_FILE, SPEC_FILE, RunSpec, StoreLocation
from pfactory.trainer.launcher import RunOutcome, parse_memory

ENTRY = "tests.workers.trainer.isolation_entries:dispatch"


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessPodLauncher]:
    """One launcher (one warm fork server) for the module; its runs pick their behaviour by params."""
    launcher = ProcessPodLauncher(tmp_path_factory.mktemp("scratch"), entry=ENTRY)
    yield launcher
    asyncio.run(launcher.aclose())


def _spec(output_uri: str, behaviour: str, *, threads: int = 1, **params: Any) -> RunSpec:
    return RunSpec(
        job_id=f"job-{uuid.uuid4().hex[:8]}",
        run_id="trial-000",
        config={"kind": "Model"},
        params={"behaviour": behaviour, **params},
        feature_store=StoreLocation(root="/nonexistent/features"),
        output_uri=output_uri,
        threads=threads,
    )


def _resources(memory: str = "1Gi", timeout_seconds: int = 60, cpu: float = 1.0) -> Resources:
    return Resources(cpu=cpu, memory=memory, timeout_seconds=timeout_seconds)


async def _run(launcher: ProcessPodLauncher, spec: RunSpec, resources: Resources | None = None) -> RunOutcome:
    return await launcher.run(spec, resources=resources or _resources(), model_name="credit_default")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"  # a zombie has ended


async def _until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_run_succeeds_in_its_own_session_folder_and_log(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    spec = _spec(str(tmp_path / "out"), "probe")
    outcome = await _run(launcher, spec)
    assert outcome.ok and outcome.reason is None and outcome.exit_code == 0, outcome
    assert outcome.result is not None and outcome.result.run_id == spec.run_id
    seen = outcome.result.metrics
    assert seen["pid"] == seen["pgid"] == seen["sid"] != os.getpid()  # a session of its own
    assert seen["cwd"] == str(tmp_path / "out")
    assert seen["tmpdir"] == str(tmp_path / "out" / "tmp")
    assert runfiles.read_spec(str(tmp_path / "out" / SPEC_FILE)) == spec
    assert f"probe {spec.run_id} running in {tmp_path / 'out'}" in outcome.logs
    assert "probe" in (tmp_path / "out" / LOG_FILE).read_text()
    assert not (tmp_path / "out" / "tmp").exists()  # scratch space is cleared, outputs stay
    assert outcome.peak_memory_bytes and outcome.peak_memory_bytes > 10 << 20


async def test_the_run_is_confined_to_its_cores_and_thread_caps(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    one = await _run(launcher, _spec(str(tmp_path / "one"), "probe", threads=4), _resources(cpu=0.5))
    assert one.ok and one.result is not None
    assert len(one.result.metrics["affinity"]) == 1
    assert set(one.result.metrics["pool_threads"]) == {1}  # capped to the core it has, not threads=4
    assert one.result.metrics["omp_env"] == "1"
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core here: a two-core run cannot be told apart")
    two = await _run(launcher, _spec(str(tmp_path / "two"), "probe", threads=2), _resources(cpu=1.5))
    assert two.ok and two.result is not None
    assert len(two.result.metrics["affinity"]) == 2
    assert set(two.result.metrics["pool_threads"]) == {2}


async def test_a_failed_run_reports_the_reason_from_its_result(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    reason = "spec.labels.path: the labels file has no rows for 2024-01-01..2024-03-31"
    outcome = await _run(launcher, _spec(str(tmp_path / "out"), "fail_with_reason", reason=reason))
    assert not outcome.ok and outcome.exit_code == 1
    assert outcome.reason == reason
    assert "about to fail" in outcome.logs


async def test_an_exit_without_a_result_quotes_the_end_of_the_log(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    outcome = await _run(launcher, _spec(str(tmp_path / "out"), "exit_without_result", code=3))
    assert not outcome.ok and outcome.exit_code == 3 and outcome.result is None
    assert outcome.reason == (
        "the run exited with code 3 without writing result.json; its log ends with: "
        "giving up without a result: the disk is full"
    )


async def test_a_segfault_fails_the_run_and_the_next_run_is_fine(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    crashed = await _run(launcher, _spec(str(tmp_path / "crash"), "segfault"))
    assert not crashed.ok and crashed.exit_code == -11
    assert crashed.reason is not None and crashed.reason.startswith("the run crashed with signal SIGSEGV")
    assert "about to crash" in crashed.logs
    after = await _run(launcher, _spec(str(tmp_path / "after"), "probe"))
    assert after.ok


async def test_a_stale_result_from_an_earlier_attempt_is_not_taken_for_this_one(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    first = await _run(launcher, _spec(str(tmp_path / "out"), "probe"))
    assert first.ok and (tmp_path / "out" / RESULT_FILE).exists()
    again = await _run(launcher, _spec(str(tmp_path / "out"), "segfault"))
    assert not again.ok and again.result is None


async def test_the_time_limit_kills_the_run_and_everything_it_started(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    outcome = await _run(
        launcher, _spec(str(tmp_path / "out"), "sleep_forever"), _resources(timeout_seconds=1)
    )
    assert not outcome.ok
    assert outcome.reason == (
        "the run exceeded its time limit of 1 s (spec.resources.timeout_seconds); raise it, or make the "
        "fit cheaper (fewer trials, a smaller model, less data)"
    )
    assert 1.0 <= outcome.duration_s < 30
    child, grandchild = map(int, (tmp_path / "out" / "pids").read_text().split())
    await _until(lambda: not _alive(child) and not _alive(grandchild), "the run's processes to end")


async def test_running_out_of_memory_fails_that_run_while_two_others_finish(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    # slow enough (8 MB every 20 ms) that the RSS watchdog, not the address-space backstop, stops it
    hog = _spec(str(tmp_path / "hog"), "allocate", chunk_mb=8, pause_s=0.02)
    neighbours = [_spec(str(tmp_path / f"ok{i}"), "work_a_little") for i in range(2)]
    outcomes = await asyncio.gather(
        _run(launcher, hog, _resources(memory="400Mi")),
        *(_run(launcher, spec, _resources(memory="1Gi")) for spec in neighbours),
    )
    hogged, *fine = outcomes
    assert not hogged.ok and hogged.result is None
    assert hogged.reason is not None
    assert hogged.reason.startswith("the run exceeded its memory limit of 400Mi (peak "), hogged.reason
    assert hogged.reason.endswith(
        "resident); raise spec.resources.memory or reduce the data (a shorter "
        "training window, fewer features)"
    )
    assert hogged.peak_memory_bytes is not None and hogged.peak_memory_bytes > parse_memory("400Mi")
    assert all(outcome.ok for outcome in fine), fine
    assert all(outcome.result and outcome.result.metrics["accuracy"] > 0.9 for outcome in fine)


async def test_a_memory_error_at_the_address_space_limit_reads_as_the_memory_limit(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    # one 2 GiB allocation: refused at once by RLIMIT_AS (start size + 400Mi), before any RSS shows it
    outcome = await _run(
        launcher,
        _spec(str(tmp_path / "out"), "allocate", chunk_mb=2048, total_mb=2048),
        _resources(memory="400Mi"),
    )
    assert not outcome.ok
    assert outcome.reason is not None and outcome.reason.startswith(
        "the run exceeded its memory limit of 400Mi"
    )
    assert "MemoryError" in outcome.logs


async def test_cancelling_a_run_leaves_no_process_behind(
    launcher: ProcessPodLauncher, tmp_path: Path
) -> None:
    pids = tmp_path / "out" / "pids"
    task = asyncio.create_task(_run(launcher, _spec(str(tmp_path / "out"), "sleep_forever")))
    await _until(pids.exists, "the run to start its grandchild")
    child, grandchild = map(int, pids.read_text().split())
    assert _alive(child) and _alive(grandchild)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: not _alive(child) and not _alive(grandchild), "the cancelled run's processes to end")


async def test_closing_the_launcher_stops_its_runs_and_its_fork_server(tmp_path: Path) -> None:
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY, preload=())
    task = asyncio.create_task(_run(launcher, _spec(str(tmp_path / "out"), "sleep_forever")))
    await _until((tmp_path / "out" / "pids").exists, "the run to start")
    child, _ = map(int, (tmp_path / "out" / "pids").read_text().split())
    stat = Path(f"/proc/{child}/stat").read_bytes()
    server = int(stat[stat.rindex(b")") + 2 :].split()[1])  # the fork server is the run's parent
    assert server != os.getpid()
    await launcher.aclose()
    outcome = await task
    assert not outcome.ok
    assert outcome.reason == "the run was stopped because the trainer shut down while it was going"
    assert not _alive(child) and not _alive(server)
    with pytest.raises(RuntimeError, match="closed"):
        await _run(launcher, _spec(str(tmp_path / "late"), "probe"))


@pytest.mark.integration
async def test_a_run_with_s3_output_reads_its_spec_and_writes_its_result_there(
    launcher: ProcessPodLauncher, moto: str, tmp_path: Path
) -> None:
    s3 = fs.S3FileSystem(
        endpoint_override=moto.removeprefix("http://"),
        scheme="http",
        region="eu-west-1",
        allow_bucket_creation=True,
    )
    s3.create_dir("runs")
    spec = _spec("s3://runs/jobs/j1/trial-000", "probe").model_copy(
        update={
            "feature_store": StoreLocation(root="s3://runs/features", endpoint_url=moto, region="eu-west-1")
        }
    )
    outcome = await _run(launcher, spec)
    assert outcome.ok, outcome
    assert s3.get_file_info("runs/jobs/j1/trial-000/spec.json").type == fs.FileType.File
    assert s3.get_file_info("runs/jobs/j1/trial-000/result.json").type == fs.FileType.File
    with s3.open_input_stream("runs/jobs/j1/trial-000/run.log") as log:
        assert b"probe trial-000 running" in log.read()
    assert outcome.result is not None
    assert not Path(outcome.result.metrics["cwd"]).exists()  # the scratch folder went with the run


async def test_a_warm_fork_starts_the_entry_in_milliseconds(tmp_path: Path) -> None:
    """Prints cold (fresh fork server: preloading included) vs warm start-up, and a fresh interpreter."""
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY)
    try:
        latencies = []
        for i in range(6):
            spec = _spec(str(tmp_path / f"run{i}"), "probe")
            started = time.monotonic()
            outcome = await _run(launcher, spec)
            assert outcome.ok and outcome.result is not None, outcome
            assert all(outcome.result.metrics["preloaded"].values())  # sklearn & co. were there already
            latencies.append(outcome.result.metrics["entered_at"] - started)
    finally:
        await launcher.aclose()
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import sklearn.ensemble, pandas, pyarrow.parquet"], check=True)
    fresh = time.monotonic() - started
    cold, warm = latencies[0], statistics.median(latencies[1:])
    print(
        f"\nrun() to entry: cold {cold * 1000:.0f} ms (server start + preload), warm median "
        f"{warm * 1000:.1f} ms over {len(latencies) - 1} runs; a fresh interpreter importing "
        f"scikit-learn, pandas and pyarrow: {fresh * 1000:.0f} ms"
    )
    assert warm < cold


def _children_of(parent: int) -> list[int]:
    children = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except FileNotFoundError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == parent:
            children.append(int(name))
    return children


def _fork_servers() -> list[int]:
    servers = []
    for pid in _children_of(os.getpid()):
        try:
            if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                servers.append(pid)
        except FileNotFoundError:
            continue
    return servers


async def test_cancelling_while_the_fork_server_is_still_preloading_leaves_no_run(tmp_path: Path) -> None:
    before = set(_fork_servers())
    launcher = ProcessPodLauncher(tmp_path / "scratch", entry=ENTRY)
    try:
        task = asyncio.create_task(_run(launcher, _spec(str(tmp_path / "out"), "sleep_forever")))
        await _until(lambda: set(_fork_servers()) - before, "the new fork server to start")
        (server,) = set(_fork_servers()) - before
        task.cancel()  # the launch is waiting for the server to finish importing scikit-learn & co.
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until(
            lambda: not [pid for pid in _children_of(server) if _alive(pid)], "the forked run to end"
        )
        assert not (tmp_path / "out" / "pids").exists()
    finally:
        await launcher.aclose()
