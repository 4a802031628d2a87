"""The embedded stack for real: Tansu, the gateway and the five workers as processes; the CLI against it."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console
from typer.testing import CliRunner

from pfactory.cli.client import GatewayClient
from pfactory.cli.demo_training import follow_training, summarise_training
from pfactory.cli.events import find_job_events
from pfactory.cli.main import app
from pfactory.cli.stack import SERVICES, Stack, read_stack_state
from pfactory.contracts import topics
from pfactory.contracts.events import TrainRequested
from pfactory.telemetry.catalog import CATALOG, UNIFIED_TAGS
from tests.utils.statsd import StatsdCapture, capturing_statsd

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LONDON = ZoneInfo("Europe/London")  # the example model's scoring timezone: the demo's "today"
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


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_each_service_polls_the_bus_at_its_own_pace(stack: Stack) -> None:
    # the hops a user waits on (job -> trainer, trained model -> registrar) poll often; daily work rarely
    waits = {name: _environ(pid).get("PF_BUS_FETCH_MAX_WAIT_MS") for name, pid in stack.pids.items()}
    assert waits["trainer"] == waits["registrar"] == "20"
    assert waits["scheduler"] == waits["scorer"] == waits["materialiser"] == "250"
    assert waits["gateway"] == "100"


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


def test_the_demo_says_why_a_model_did_not_register(stack: Stack) -> None:
    # No data was generated in this stack: the training job fails, and the demo's summary says why.
    console = Console(record=True, width=200, soft_wrap=True)
    with GatewayClient(stack.gateway_url, stack.api_key) as client:
        accepted = client.submit((EXAMPLES / "credit_model.yaml").read_text(), "credit_model.yaml")
        finished = follow_training(console, client, [accepted], timeout_s=90)
        registered = summarise_training(console, client, stack.gateway_url, finished[0], home=stack.home)
    out = console.export_text()
    assert registered is False
    assert "credit-default: failed" in out, out
    assert "not registered credit-default: " in out and "data/raw/labels" in out, out
    assert f"{stack.gateway_url}/v1/jobs/{accepted['job_id']}" in out
    assert str(stack.home / "logs" / "trainer.log") in out


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


@pytest.mark.timeout(900)  # the whole demo: ~200 s on a quiet 2-core machine, more under load
def test_demo_tells_the_whole_story_from_data_to_a_scheduled_scored_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #10: ``pfactory demo`` (7 days here, 60 in ``make demo``) from data to the next day's scores."""
    home = tmp_path / ".pfactory"
    with capturing_statsd() as agent:  # the stack's processes inherit the environment
        monkeypatch.setenv("PF_TELEMETRY_STATSD_PORT", str(agent.port))
        result = CliRunner().invoke(
            app, ["demo", "--home", str(home), "--examples", str(EXAMPLES), "--days", "7"]
        )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "MaterialisationRequested on pf.materialisation.requested" in out
    assert "TrainRequested on pf.train.requested" in out
    assert "demo passed" in out
    assert "7/7 days" in out and "succeeded" in out
    today = _today_in(out)
    history = [today - timedelta(days=back) for back in range(6, -1, -1)]
    next_day = today + timedelta(days=1)
    features = home / "features" / "feature_set=credit-features" / "version=1"
    assert sorted(p.name for p in features.glob("ds=*") if (p / "_SUCCESS").exists()) == [
        f"ds={day}" for day in [*history, next_day]
    ]
    assert (tmp_path / "data" / "raw" / "ground_truth.json").exists()
    assert f"spec.training.window is set to {history[0]}..{today}" in out

    # the models were trained after their features existed, with progress, and registered
    assert out.index("7/7 days") < out.index("train job")
    assert "credit-default: running training 0/12 runs" in out
    assert "credit-default: succeeded registered 12/12 runs" in out
    assert "credit-default-glm: succeeded registered 6/6 runs" in out
    summary = out[out.index("credit-default v1 on credit-features@1: registered as candidate") :]
    assert re.search(r"champion +trial-\d{3}, best of 12 trials by roc_auc: estimator\.max_depth=", summary)
    assert re.search(r"roc_auc 0\.\d{3} \(95% CI 0\.\d{3} to 0\.\d{3}\), threshold ≥ 0\.7: pass", summary)
    assert re.search(
        r"age_band demographic_parity_difference 0\.\d{3} \(largest allowed 0\.1\): FAIL — "
        r"selection_rate [\d.]+% for 18-24",
        summary,
    ), summary
    assert "fairness gate(s) failed" in summary
    assert "/v1/models/credit-default/versions/1/card?feature_set=credit-features@1&format=html" in summary
    card = (
        home / "registry" / "artifacts" / "models" / "model=credit-default" / "feature_set=credit-features@1"
    )
    assert (card / "version=1" / "card.md").exists() and str(card / "version=1" / "card.md") in summary
    _the_champion_was_governed_scheduled_and_scored(out, home, next_day)
    assert re.search(r"timings: stack start [\d.]+ s · data [\d.]+ s · .*training [\d.]+ s", out)
    assert read_stack_state(home) is None  # the stack it started is gone again
    _the_demo_emitted_the_catalog_metrics(agent)


def _today_in(out: str) -> date:
    found = re.search(r"backfill (\d{4}-\d{2}-\d{2}) to (\d{4}-\d{2}-\d{2})", out)
    assert found, out
    start, end = (date.fromisoformat(day) for day in found.groups())
    assert (end - start).days == 6
    assert end in {datetime.now(LONDON).date(), (datetime.now(LONDON) - timedelta(minutes=30)).date()}
    return end


def _the_champion_was_governed_scheduled_and_scored(out: str, home: Path, next_day: date) -> None:
    """The gate refuses a plain approval, the override is recorded, the scheduler takes it live and scores."""
    story = out[out.index("7. governance") :]
    assert "refused plain approval of credit-default v1" in story
    assert "failed its gates (fairness:age_band:" in story
    assert "approved credit-default v1 with an admin override" in story
    assert f"scheduled credit-default v1: live from {next_day}, scored on '0 6 * * *' Europe/London" in story
    assert f"succeeded 1/1 days — {next_day} good" in story
    assert f"moving the scheduler's clock to {next_day} 05:59:45 Europe/London" in story
    assert "live credit-default v1 (the scheduler took it live)" in story
    assert re.search(rf"scored {next_day}: ScoringCompleted on pf.scoring.completed .* from scorer", story)
    assert re.search(r"rows +2000 scored with version 1", story), story
    assert re.search(r"drift +\d+ of \d+ features over PSI", story), story
    written = re.search(r"written +(\S+)", story)
    assert written, story
    predictions = Path(unquote(urlparse(written.group(1)).path))
    assert predictions.name == f"ds={next_day}" and any(predictions.glob("*.parquet")), predictions
    assert "where to look next" in out and f"{next_day} scored by the scheduler" in out
    scheduler_log = (home / "logs" / "scheduler.log").read_text(encoding="utf-8")
    assert "credit-default/feature_set=credit-features@1/version=1 is live" in scheduler_log
    assert f"scoring {next_day} requested" in scheduler_log


def _the_demo_emitted_the_catalog_metrics(agent: StatsdCapture) -> None:
    """Issue #8: the demo's work shows on the DogStatsD wire, every line a catalog metric with its tags."""
    services = {spec.name for spec in SERVICES} | {"scorer-online"}
    for line in agent.lines:
        metric = CATALOG.get(line.name)
        assert metric is not None, f"{line.raw}: not a catalog metric"
        assert set(line.tags) == {*metric.tags, *UNIFIED_TAGS}, line.raw
        assert line.tags["service"] in services and line.tags["env"] == "dev", line.raw

    def total(name: str, **tags: str) -> float:
        return sum(line.value for line in agent.named(name, **tags))

    fs = "credit-features@1"
    assert total("pf.jobs.submitted", kind="materialise", service="gateway") >= 1
    assert total("pf.jobs.succeeded", kind="materialise", service="gateway") >= 1
    assert total("pf.jobs.submitted", kind="train", service="gateway") == 2  # the two example models
    assert total("pf.jobs.succeeded", kind="train", service="gateway") == 2
    assert total("pf.features.partitions", feature_set=fs, status="good") == 8  # 7 days, then the next
    assert total("pf.features.rows_materialised", feature_set=fs) > 0
    assert {line.tags["stage"] for line in agent.named("pf.stage.duration", kind="train")} == {
        "load",
        "fit",
        "evaluate",
        "save",
    }
    assert agent.named("pf.stage.duration", kind="materialise", service="materialiser")
    registered = {line.tags["model"] for line in agent.named("pf.registry.registered", feature_set=fs)}
    assert registered == {"credit-default", "credit-default-glm"}
    assert agent.named("pf.registry.versions", status="candidate", service="registrar")
    handled = {line.tags["service"] for line in agent.named("pf.bus.handled", outcome="ok")}
    assert {"gateway", "materialiser", "trainer", "registrar", "scheduler", "scorer"} <= handled
    assert agent.named("pf.bus.consumer_lag")
    champion = {"model": "credit-default", "feature_set": fs, "model_version": "1"}
    assert total("pf.scheduler.deployments", action="scheduled", service="scheduler", **champion) >= 1
    assert total("pf.scheduler.deployments", action="live", service="scheduler", **champion) == 1
    assert total("pf.scoring.runs", status="succeeded", service="scorer", **champion) == 1
    assert total("pf.scoring.rows", mode="batch", service="scorer", **champion) == 2000
    assert {line.tags["feature"] for line in agent.named("pf.drift.psi", **champion)} >= {"income", "score"}
