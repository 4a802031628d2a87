"""The DogStatsD emitter on the wire: catalog metrics only, declared tags only, unified tags on each line."""

from __future__ import annotations

import socket

import pytest

from pfactory.telemetry import catalog
from pfactory.telemetry.catalog import Kind, Metric
from pfactory.telemetry.metrics import MetricError, Metrics, format_line
from pfactory.telemetry.settings import TelemetrySettings
from tests.utils.statsd import capturing_statsd, parse_line


def test_lines_reach_the_agent_with_the_declared_and_unified_tags() -> None:
    with capturing_statsd() as agent:
        metrics = Metrics(service="scorer", env="prod", version="1.4.2", port=agent.port)
        metrics.emit(
            catalog.SCORING_ROWS,
            1500,
            model="credit_default",
            feature_set="credit@3",
            model_version=4,
            mode="batch",
        )
        metrics.emit(
            catalog.DRIFT_PSI,
            0.125,
            model="credit_default",
            feature_set="credit@3",
            model_version=4,
            feature="income",
        )
        with metrics.timer(catalog.STAGE_DURATION, kind="score", stage="drift"):
            pass
        agent.wait_for(lambda: len(agent.lines) == 3, 5, "three lines")
    rows, psi, stage = agent.lines
    assert rows.raw == (
        "pf.scoring.rows:1500|c|#model:credit_default,feature_set:credit@3,model_version:4,mode:batch,"
        "service:scorer,env:prod,version:1.4.2"
    )
    assert (psi.name, psi.value, psi.kind) == ("pf.drift.psi", 0.125, "g")
    assert (stage.kind, stage.tags["stage"], stage.tags["service"]) == ("d", "drift", "scorer")
    assert 0 <= stage.value < 50


def test_a_metric_outside_the_catalog_is_refused() -> None:
    rogue = Metric("pf.rogue", Kind.COUNT, "thing", (), "not declared")
    with pytest.raises(MetricError, match=r"not in pfactory\.telemetry\.catalog"):
        Metrics.disabled().emit(rogue)
    twin = Metric(**{**catalog.JOBS_SUBMITTED.__dict__})  # same name, not the catalog's object
    with pytest.raises(MetricError, match=r"not in pfactory\.telemetry\.catalog"):
        Metrics.disabled().emit(twin, kind="train")


def test_tags_must_be_exactly_the_declared_ones() -> None:
    metrics = Metrics.disabled()
    with pytest.raises(MetricError, match=r"missing \['mode'\]"):
        metrics.emit(catalog.SCORING_LATENCY, 3.0, model="m", feature_set="f@1", model_version=1)
    with pytest.raises(MetricError, match=r"undeclared \['user_id'\]"):
        metrics.emit(catalog.JOBS_SUBMITTED, kind="train", user_id="u1")
    with pytest.raises(MetricError, match="negative"):
        metrics.emit(catalog.JOBS_SUBMITTED, -1, kind="train")
    with (
        pytest.raises(MetricError, match="not milliseconds"),
        metrics.timer(catalog.SCORING_ROWS, model="m", feature_set="f", model_version=1, mode="online"),
    ):
        pass


def test_a_bad_timer_call_fails_before_the_work() -> None:
    ran = []
    with pytest.raises(MetricError), Metrics.disabled().timer(catalog.STAGE_DURATION, kind="train"):
        ran.append(True)
    assert ran == []


def test_tag_values_cannot_break_the_line() -> None:
    line = format_line(catalog.ROWS_MATERIALISED, 1, {"feature_set": "a,b|c #d:e"}, "service:x")
    parsed = parse_line(line)
    assert parsed.tags == {"feature_set": "a_b_c__d:e", "service": "x"}
    assert format_line(catalog.ROWS_MATERIALISED, 1, {"feature_set": None}, "").endswith("|#feature_set:none")


def test_no_agent_is_silent() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: ICMP port unreachable comes back
    metrics = Metrics(service="gateway", port=port)
    for _ in range(50):
        metrics.emit(catalog.JOBS_SUBMITTED, kind="train")
    metrics.close()


def test_settings_build_the_emitter_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_TELEMETRY_ENV", "staging")
    monkeypatch.setenv("PF_TELEMETRY_STATSD_PORT", "9125")
    metrics = TelemetrySettings().metrics("trainer")
    assert metrics.constant == "service:trainer,env:staging,version:0.1.0"
    with pytest.raises(ValueError, match="statsd_port"):
        TelemetrySettings(statsd_port=0)


def test_catalog_names_are_unique_well_formed_and_documented() -> None:
    for name, metric in catalog.CATALOG.items():
        assert name == metric.name and name.startswith("pf.")
        assert metric.description and metric.unit
        assert not set(metric.tags) & set(catalog.UNIFIED_TAGS), name
        assert len(set(metric.tags)) == len(metric.tags), name


def test_an_enumerated_tag_takes_only_its_declared_values() -> None:
    metrics = Metrics.disabled()
    metrics.emit(catalog.SCORING_RUNS, model="m", feature_set="f@1", model_version=1, status="succeeded")
    with pytest.raises(MetricError, match=r"status='success' is not one of \['succeeded', 'failed'\]"):
        metrics.emit(catalog.SCORING_RUNS, model="m", feature_set="f@1", model_version=1, status="success")
    for metric in catalog.CATALOG.values():
        assert set(metric.values) <= set(metric.tags), metric.name
        assert all(values for values in metric.values.values()), metric.name


def test_a_checked_tag_set_is_reused_and_the_checks_still_hold() -> None:
    metrics = Metrics.disabled()
    for _ in range(3):  # the second call onwards reuses the checked line parts
        metrics.emit(catalog.JOBS_SUBMITTED, kind="train")
    with pytest.raises(MetricError, match="negative"):
        metrics.emit(catalog.JOBS_SUBMITTED, -1, kind="train")  # the value is still checked each time
    with pytest.raises(MetricError, match="is not one of"):
        metrics.emit(catalog.JOBS_SUBMITTED, kind="training")
    twin = Metric(**{**catalog.JOBS_SUBMITTED.__dict__})
    with pytest.raises(MetricError, match=r"not in pfactory\.telemetry\.catalog"):
        metrics.emit(twin, kind="train")
    with pytest.raises(MetricError, match="undeclared"):
        metrics.emit(catalog.JOBS_SUBMITTED, kind="train", extra=["unhashable"])  # type: ignore[arg-type]
