"""``pfactory score`` against a real gateway (uvicorn on a free port) on the real Tansu broker.

The scorer worker is not part of these tests: where a run must finish, the test itself publishes the
terminal ``JobStatusChanged`` on ``pf.jobs.status`` (as the scorer would), and the gateway consumes it.
That proves ``--watch`` follows the run to its end and prints the scorer's result; the scorer's own
tests prove what it writes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pfactory.bus import BusSettings, EventPublisher, build_broker
from pfactory.contracts.events import JobStatus, JobStatusChanged
from pfactory.gateway.app import create_app
from pfactory.gateway.auth import new_api_key
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.wiring import build_registry
from tests.gateway.registry_support import BUREAU_PAIR, LIMIT_PAIR, PAIR, make_live, seed
from tests.utils.servers import running_asgi

pytestmark = pytest.mark.integration


@dataclass
class Served:
    url: str
    admin_key: str
    home: Path
    bus: BusSettings


async def _seed(settings: GatewaySettings) -> None:
    registry = await build_registry(settings.registry_settings())
    try:
        await seed(registry, PAIR, "job-1")
        await seed(registry, BUREAU_PAIR, "job-b1")
        await seed(registry, LIMIT_PAIR, "job-l1")
        await make_live(registry, LIMIT_PAIR, 1)
    finally:
        await registry.close()


@pytest.fixture
def served(tmp_path: Path, bus_settings: BusSettings) -> Iterator[Served]:
    """A gateway on a free port, publishing to and following job status on the session's Tansu."""
    key = new_api_key()[0]
    settings = GatewaySettings(
        data_dir=tmp_path / "gateway", bootstrap_admin_key=key, bus_enabled=False, outbox_poll_interval_s=0.05
    )
    asyncio.run(_seed(settings))
    with running_asgi(create_app(settings, bus=bus_settings), what="gateway") as url:
        yield Served(url, key, tmp_path, bus_settings)


@dataclass
class Finished:
    exit_code: int
    output: str


def _command(served: Served, *args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from pfactory.cli.main import main; main()",
        *args,
        "--url",
        served.url,
        "--api-key",
        served.admin_key,
        "--home",
        str(served.home),
    ]


def _environment() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "PF_BUS_BOOTSTRAP_SERVERS": ""}


def cli(served: Served, *args: str) -> Finished:
    """Run ``pfactory`` in its own process (the gateway thread's logging stays out of its output)."""
    done = subprocess.run(
        _command(served, *args), capture_output=True, text=True, timeout=120, env=_environment(), check=False
    )
    return Finished(done.returncode, done.stdout + done.stderr)


def _in_background(served: Served, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _command(served, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_environment(),
    )


def _finish(process: subprocess.Popen[str]) -> Finished:
    output, _ = process.communicate(timeout=120)
    return Finished(process.returncode, output)


def _wait_for_run(served: Served, model: str, process: subprocess.Popen[str]) -> str:
    """The id of the model's scoring run, once the CLI has started it."""
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {served.admin_key}"}
    while time.monotonic() < deadline:
        runs = httpx.get(f"{served.url}/v1/scoring-runs", params={"model": model}, headers=headers).json()
        if runs["data"]:
            return str(runs["data"][0]["run_id"])
        if process.poll() is not None:
            raise AssertionError(f"pfactory score ended before starting a run: {_finish(process).output}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no scoring run of {model} within 30 s: {_finish(process).output}")


def _publish_status(served: Served, **fields: Any) -> None:
    async def publish() -> None:
        broker = build_broker(served.bus, service="test-scorer")
        await broker.connect()
        try:
            await EventPublisher(broker, "scorer").publish(JobStatusChanged(**fields))
        finally:
            await broker.stop()

    asyncio.run(publish())


def test_score_watch_prints_rows_predictions_and_drift_over_threshold(served: Served) -> None:
    process = _in_background(
        served, "score", "credit_limit", "--date", "2024-07-01", "--watch", "--timeout", "90"
    )
    run_id = _wait_for_run(served, "credit_limit", process)
    result = {
        "predictions_uri": "file:///data/predictions/model=credit_limit/version=1/ds=2024-07-01",
        "rows": 1200,
        "drift": {"income": 0.31, "age": 0.05, "utilisation": 0.27, "score": 0.04},
        "version": 1,
    }
    _publish_status(served, job_id=run_id, status=JobStatus.SUCCEEDED, stage="scored", result=result)
    done = _finish(process)
    assert done.exit_code == 0, done.output
    assert (
        f"accepted scoring run {run_id}: credit_limit on credit_features@4 with the live version"
        in done.output
    )
    assert "rows      1200 scored with version 1" in done.output
    assert "written   file:///data/predictions/model=credit_limit/version=1/ds=2024-07-01" in done.output
    assert "drift     2 of 3 features over PSI 0.2: income 0.310, utilisation 0.270" in done.output
    assert "score PSI 0.040" in done.output


def test_score_watch_of_a_failed_run_exits_1_with_the_reason_and_advice(served: Served) -> None:
    process = _in_background(served, "score", "credit_limit", "--date", "2024-07-02", "--version", "1", "-w")
    run_id = _wait_for_run(served, "credit_limit", process)
    reason = "no feature partition for 2024-07-02 under features/feature_set=credit_features/version=4"
    _publish_status(served, job_id=run_id, status=JobStatus.FAILED, stage="scoring", reason=reason)
    done = _finish(process)
    assert done.exit_code == 1, done.output
    assert (
        reason in done.output
        and "advice:" in done.output
        and "pfactory models show credit_limit" in done.output
    )


def test_score_refuses_bad_input_with_advice(served: Served) -> None:
    unknown = cli(served, "score", "credit_limt", "--date", "2024-07-01")
    assert unknown.exit_code == 1
    assert (
        "no model named 'credit_limt'" in unknown.output and "credit_default, credit_limit" in unknown.output
    )

    ambiguous = cli(served, "score", "credit_default", "--date", "2024-07-01", "--version", "1")
    assert ambiguous.exit_code == 1
    assert "(bureau_features@1, credit_features@3); choose one with --feature-set" in ambiguous.output

    both = cli(served, "score", "credit_limit", "--date", "2024-07-01", "--version", "1", "--alias", "live")
    assert both.exit_code == 2 and "pick one of --version or --alias" in both.output
    bad_day = cli(served, "score", "credit_limit", "--date", "01/07/2024")
    assert bad_day.exit_code == 2 and "YYYY-MM-DD" in bad_day.output

    first = cli(served, "score", "credit_limit", "--date", "2024-07-03", "--run-id", "manual-2024-07-03")
    again = cli(served, "score", "credit_limit", "--date", "2024-07-03", "--run-id", "manual-2024-07-03")
    assert (first.exit_code, again.exit_code) == (0, 0)
    assert "accepted scoring run manual-2024-07-03" in first.output
    assert "found existing scoring run manual-2024-07-03" in again.output
