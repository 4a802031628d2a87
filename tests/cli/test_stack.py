"""The embedded stack for real: Tansu, the gateway and the five workers as processes; the CLI against it."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pfactory.cli.events import find_job_events
from pfactory.cli.main import app
from pfactory.cli.stack import SERVICES, Stack, read_stack_state
from pfactory.contracts import topics
from pfactory.contracts.events import TrainRequested

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JOB_ID = re.compile(r"job ([0-9a-f-]{36})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack") / ".pfactory"
    running = Stack(
        home,
        prefer_default_ports=False,
        health_timeout_s=120,
        # Tansu rebalances slowly; short sessions let the workers' groups settle fast.
        extra_env={"PF_BUS_SESSION_TIMEOUT_MS": "3000", "PF_BUS_HEARTBEAT_INTERVAL_MS": "500"},
    )
    with running:
        yield running


def _cli(stack: Stack, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, [*args, "--url", stack.gateway_url, "--api-key", stack.api_key, "--home", str(stack.home)]
    )
    return result.exit_code, result.output


def test_every_service_is_up_with_its_log_and_the_key_file(stack: Stack) -> None:
    assert sorted(stack.pids) == sorted(spec.name for spec in SERVICES)
    for service in stack.services:
        assert service.exit_code is None
        assert service.log_path == stack.home / "logs" / f"{service.name}.log"
    assert (stack.home / "credentials.json").exists()
    state = read_stack_state(stack.home)
    assert state is not None and state["gateway_url"] == stack.gateway_url


def test_submit_is_accepted_and_its_train_request_reaches_the_topic(stack: Stack) -> None:
    code, out = _cli(stack, "submit", str(EXAMPLES / "credit_model.yaml"))
    assert code == 0, out
    assert "accepted" in out and f"{stack.gateway_url}/v1/jobs/" in out
    match = JOB_ID.search(out)
    assert match, out
    job_id = match.group(1)

    seen = asyncio.run(
        find_job_events(stack.bootstrap_servers, topics.TRAIN_REQUESTED, [job_id], timeout_s=20)
    )

    assert job_id in seen, f"no TrainRequested for {job_id} on {topics.TRAIN_REQUESTED}"
    request = seen[job_id].envelope.open_as(TrainRequested)
    assert request.model_name == "credit-default" and seen[job_id].envelope.producer == "gateway"
    # submit itself showed that same event, where it sits on the bus
    assert f"TrainRequested on {topics.TRAIN_REQUESTED}" in out
    assert seen[job_id].envelope.event_id in out

    # No data was generated in this stack: the trainer fails the job with what is missing and the
    # fix; watch follows it to the end and exits 1.
    code, out = _cli(stack, "jobs", "watch", job_id, "--timeout", "90")
    assert code == 1, out
    assert "data/raw/labels" in out and "generate" in out, out

    code, out = _cli(stack, "jobs", "list", "--kind", "train")
    assert code == 0 and job_id in out


def test_an_invalid_config_is_refused_with_located_issues(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad_model.yaml"
    bad.write_text(
        (EXAMPLES / "credit_model.yaml").read_text().replace("  task: binary_classification", "  tsk: x")
    )
    code, out = _cli(stack, "submit", str(bad))
    assert code == 1, out
    assert re.search(rf"{re.escape(str(bad))}:\d+:\d+: spec\.tsk: unknown field", out), out


def test_a_wrong_key_gets_advice(stack: Stack) -> None:
    result = CliRunner().invoke(
        app,
        [
            "submit",
            str(EXAMPLES / "credit_model.yaml"),
            "--url",
            stack.gateway_url,
            "--api-key",
            "pf_000000000000_" + "x" * 40,
        ],
    )
    assert result.exit_code == 3, result.output
    assert "401" in result.output and "--api-key" in result.output


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    stack = Stack(tmp_path / ".pfactory", prefer_default_ports=False, services=["trainer", "gateway"])
    stack.start()
    pids = dict(stack.pids)
    assert stack.broker is not None
    broker_port = stack.broker.port
    assert all(_alive(pid) for pid in pids.values())

    codes = stack.stop()

    assert set(codes) == {"trainer", "gateway"}
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert not _listening(broker_port)
    assert read_stack_state(stack.home) is None


def test_demo_submits_the_examples_sees_their_events_and_stops_the_stack(tmp_path: Path) -> None:
    home = tmp_path / ".pfactory"
    result = CliRunner().invoke(app, ["demo", "--home", str(home), "--examples", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "MaterialisationRequested on pf.materialisation.requested" in out
    assert "TrainRequested on pf.train.requested" in out
    assert "demo passed" in out
    assert "7/7 days" in out and "succeeded" in out
    features = home / "features" / "feature_set=credit-features" / "version=1"
    assert sorted(p.name for p in features.glob("ds=*") if (p / "_SUCCESS").exists()) == [
        f"ds=2024-01-0{day}" for day in range(1, 8)
    ]
    assert (tmp_path / "data" / "raw" / "ground_truth.json").exists()
    assert read_stack_state(home) is None  # the stack it started is gone again
