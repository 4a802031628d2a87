"""Generated DAG files, checked by a real Airflow 3.3: they load without errors or deprecation warnings,
keep every value as data, schedule in their zone, and run against a stand-in gateway with ``dags test``."""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pfactory.gateway.feature_schemas import MaterialisationCreate
from pfactory.gateway.routes.alerts import AlertCreate
from pfactory.gateway.scoring_schemas import RUN_ID_PATTERN, ScoringRunCreate
from pfactory.scheduler.dags import (
    MaterialisationDagSpec,
    ScoringDagSpec,
    materialisation_dag_id,
    render_materialisation_dag,
    render_scoring_dag,
    scoring_dag_id,
)
from tests.workers.scheduler.airflow_env import AirflowEnv
from tests.workers.scheduler.conftest import API_KEY, FakeGateway

HOSTILE = (
    "# Credit default\n\n\"\"\"\n'''\n{{ dag_run.conf }} {% raw %}\n"
    "\"); import os; os.system('echo pwned') #\n"
    "\\N{BULLET} \\x00-free, unicode: café ✓ \U0001f600\r\nform\x0cfeed, line\u2028separator, tab\t\n"
    "last line without newline"
)
ALLOWED_IMPORT_ROOTS = {
    "__future__",
    "airflow",
    "pendulum",
    "json",
    "logging",
    "os",
    "urllib",
    "warnings",
    "datetime",
}


def scoring_spec(**changes: Any) -> ScoringDagSpec:
    """A valid scoring spec; ``changes`` override fields (the dag id follows the names unless given)."""
    fields: dict[str, Any] = {
        "model_name": "credit_default",
        "version": 4,
        "feature_set_name": "credit_features",
        "feature_set_version": "3",
        "cron": "0 6 * * *",
        "timezone": "Europe/London",
        "start_date": date(2026, 3, 7),
        "owner": "risk-team",
        "doc_md": "# credit_default v4\n\nScores loan applications.",
        "api_url": "http://127.0.0.1:8000",
        "retries": 0,
    }
    fields.update(changes)
    fields.setdefault(
        "dag_id",
        scoring_dag_id(
            fields["model_name"], fields["feature_set_name"], fields["feature_set_version"], fields["version"]
        ),
    )
    return ScoringDagSpec(**fields)


def materialisation_spec(**changes: Any) -> MaterialisationDagSpec:
    """A valid materialisation spec."""
    fields: dict[str, Any] = {
        "feature_set_name": "credit_features",
        "feature_set_version": "3",
        "cron": "0 2 * * *",
        "timezone": "Europe/London",
        "start_date": date(2026, 3, 7),
        "owner": "data-eng",
        "doc_md": "# credit_features v3",
        "api_url": "http://127.0.0.1:8000",
        "retries": 0,
    }
    fields.update(changes)
    fields.setdefault(
        "dag_id", materialisation_dag_id(fields["feature_set_name"], fields["feature_set_version"])
    )
    return MaterialisationDagSpec(**fields)


def constants_of(source: str) -> dict[str, Any]:
    """The module constants a generated file assigns (UPPER_CASE = literal), read back without running it."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper():
                try:
                    found[name] = ast.literal_eval(node.value)
                except ValueError:
                    continue  # DEFAULT_ARGS and the like are code, not literals
    return found


def code_of(source: str) -> str:
    """The generated module's AST with the literal constants' values blanked: what the file *does*."""
    tree = ast.parse(source)
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.isupper()
        ):
            try:
                ast.literal_eval(node.value)
            except ValueError:
                continue
            node.value = ast.Constant(None)
    return ast.dump(tree)


# --- static checks (no Airflow needed) ----------------------------------------------------------------


def import_roots(source: str) -> set[str]:
    """The top-level packages a generated DAG imports (absolute imports only: a relative one fails)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    "render",
    [
        lambda: render_scoring_dag(scoring_spec()),
        lambda: render_materialisation_dag(materialisation_spec()),
    ],
    ids=["scoring", "materialisation"],
)
def test_generated_source_compiles_and_imports_only_airflow_and_the_standard_library(render: Any) -> None:
    source = render()
    compile(source, "generated_dag.py", "exec")
    roots = import_roots(source)
    assert "pfactory" not in roots
    assert roots <= ALLOWED_IMPORT_ROOTS, roots - ALLOWED_IMPORT_ROOTS
    assert "from airflow.sdk import DAG, CronTriggerTimetable, Variable" in source


def test_hostile_values_stay_data() -> None:
    hostile = scoring_spec(doc_md=HOSTILE, owner='o\'wner""" {{ x }}\n#', tags=("'); x('", "{{ t }}"))
    plain = scoring_spec()
    source = render_scoring_dag(hostile)

    # the same code runs whatever the card says: only the literals differ
    assert code_of(source) == code_of(render_scoring_dag(plain))
    constants = constants_of(source)
    assert constants["DOC_MD"] == HOSTILE
    assert constants["OWNER"] == hostile.owner
    assert constants["TAGS"] == ["pfactory", "scoring", "credit_default", "'); x('", "{{ t }}"]
    materialisation = render_materialisation_dag(materialisation_spec(doc_md=HOSTILE))
    assert constants_of(materialisation)["DOC_MD"] == HOSTILE
    assert code_of(materialisation) == code_of(render_materialisation_dag(materialisation_spec()))


def test_rendering_is_deterministic_and_the_constants_carry_the_spec() -> None:
    spec = scoring_spec(cron="@daily", timezone="Asia/Kolkata", api_url="https://gw.example.com/")
    assert render_scoring_dag(spec) == render_scoring_dag(replace(spec))
    constants = constants_of(render_scoring_dag(spec))
    assert constants["CRON"] == "0 0 * * *"
    assert constants["TIMEZONE"] == "Asia/Kolkata"
    assert constants["START_DATE"] == (2026, 3, 7)
    assert constants["API_URL"] == "https://gw.example.com"
    assert constants["IDEMPOTENCY_PREFIX"] == spec.dag_id
    assert constants["MODEL_VERSION"] == 4 and constants["CHECK"] == "scoring_dag"


def test_dag_ids() -> None:
    assert scoring_dag_id("credit_default", "credit_features", "3", 4) == (
        "pf_score__credit_default__credit_features_3__v4"
    )
    assert materialisation_dag_id("credit_features", "1.2.0") == "pf_materialise__credit_features_1.2.0"
    odd = [
        scoring_dag_id("a__b", "c", "1", 1),
        scoring_dag_id("a", "b__c", "1", 1),
        scoring_dag_id("a_", "_b", "1", 1),
        scoring_dag_id("a", "__b", "1", 1),
        scoring_dag_id("kredit räte/x", "f s", "1", 1),
        scoring_dag_id("m" * 400, "f", "1", 1),
        scoring_dag_id("m" * 400, "f", "1", 2),
    ]
    assert len(set(odd)) == len(odd)  # names that would collide once joined get distinct hashes
    for dag_id in odd:
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,250}", dag_id), dag_id
        assert dag_id == scoring_dag_id(*_inputs_of(dag_id, odd))
    # the long one still fits the gateway's Idempotency-Key pattern once a day is appended
    key_prefix = constants_of(render_scoring_dag(scoring_spec(model_name="m" * 200)))["IDEMPOTENCY_PREFIX"]
    assert re.fullmatch(RUN_ID_PATTERN, f"{key_prefix}-2026-03-07-r19")
    # and its alerts' dedup key fits the alerts API's pattern
    for model in ("m" * 200, "credit_default"):
        dedup = constants_of(render_scoring_dag(scoring_spec(model_name=model)))["ALERT_DEDUP_KEY"]
        AlertCreate(dedup_key=dedup, check="scoring_dag", summary="x")  # the alerts API's pattern
    assert dedup == "airflow:pf_score__credit_default__credit_features_3__v4"


def _inputs_of(dag_id: str, odd: list[str]) -> tuple[str, str, str, int]:
    inputs = [
        ("a__b", "c", "1", 1),
        ("a", "b__c", "1", 1),
        ("a_", "_b", "1", 1),
        ("a", "__b", "1", 1),
        ("kredit räte/x", "f s", "1", 1),
        ("m" * 400, "f", "1", 1),
        ("m" * 400, "f", "1", 2),
    ]
    return inputs[odd.index(dag_id)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dag_id": "bad id!"}, "dag_id 'bad id!' must be"),
        ({"dag_id": "x" * 251}, "dag_id"),
        ({"retries": -1}, "retries must be an integer >= 0"),
        ({"execution_timeout_s": 0}, "execution_timeout_s must be a positive"),
        ({"sensor_timeout_s": -5}, "sensor_timeout_s must be a positive"),
        ({"sensor_poke_s": 7200, "sensor_timeout_s": 3600}, "sensor_poke_s \\(7200\\) is longer"),
        ({"api_url": "ftp://gw"}, "must be the gateway's http\\(s\\) base URL"),
        ({"api_url": "http://gw?x=1"}, "no query"),
        ({"api_url": "gw:8000"}, "http\\(s\\)"),
        ({"timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"cron": "0 6 * *"}, "has 4 fields; it needs 5"),
        ({"cron": "@reboot"}, "has 1 field; it needs 5 .* or one of @hourly"),
        ({"cron": "0 6 30 feb *"}, "never fires"),
        ({"start_date": datetime(2026, 3, 7, 6)}, "start_date must be a date"),
        ({"owner": " "}, "owner must not be empty"),
        ({"doc_md": "a\x00b"}, "NUL"),
        ({"version": 0}, "version must be a positive integer"),
        ({"tags": ("x" * 101,)}, "at most 100"),
        ({"model_name": "a/b"}, "without '/'"),
        ({"api_key_variable": "pf key"}, "Airflow Variable name"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scoring_spec(**changes)


def test_invalid_materialisation_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="poke_s must be a positive"):
        materialisation_spec(poke_s=0)
    with pytest.raises(ValueError, match="feature_set_version must not be empty"):
        materialisation_spec(feature_set_version="")


# --- Airflow itself ------------------------------------------------------------------------------------


def _local(day: date, hour: int, minute: int, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone))


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.integration
def test_airflow_loads_every_generated_dag_as_specified(airflow: AirflowEnv, tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    looks_like_a_path = tmp_path / "secret.md"
    looks_like_a_path.write_text("this file must not become the DAG's documentation")
    start = date(2026, 3, 7)  # America/New_York moves to summer time on 8 March 2026
    specs: list[ScoringDagSpec | MaterialisationDagSpec] = [
        scoring_spec(timezone="America/New_York", doc_md=HOSTILE, tags=("team:risk",)),
        scoring_spec(model_name="churn", version=12, timezone="Asia/Kolkata", cron="30 3 * * *"),
        scoring_spec(model_name="weekly-ltv", cron="0 6 * * 1", timezone="Europe/London"),
        scoring_spec(model_name="odd__name", feature_set_version="1.2.0", cron="@daily", timezone="UTC"),
        scoring_spec(model_name="card_is_a_path", doc_md=str(looks_like_a_path), owner='o\'brien "{{ x }}"'),
        materialisation_spec(timezone="Asia/Kolkata", doc_md=HOSTILE),
        materialisation_spec(
            feature_set_name="events", feature_set_version="2", cron="@hourly", timezone="UTC"
        ),
        scoring_spec(model_name="goes_live_later", start_date=date.today() + timedelta(days=20)),
    ]
    for spec in specs:
        source = (
            render_scoring_dag(spec) if isinstance(spec, ScoringDagSpec) else render_materialisation_dag(spec)
        )
        (folder / f"{spec.dag_id}.py").write_text(source, encoding="utf-8")

    report = airflow.load_dags(folder, first_runs=3)

    assert report.import_errors == {}
    assert report.warnings == {}, report.warnings  # DeprecationWarnings would be import errors, others here
    assert sorted(report.dags) == sorted(spec.dag_id for spec in specs)
    for spec in specs:
        dag = report.dags[spec.dag_id]
        scoring = isinstance(spec, ScoringDagSpec)
        kind = "scoring" if scoring else "materialisation"
        main_tag = spec.model_name if isinstance(spec, ScoringDagSpec) else spec.feature_set_name
        assert dag["tags"] == sorted({"pfactory", kind, main_tag, *spec.tags})
        assert dag["timetable"] == "CronTriggerTimetable"
        expected_cron = {"@daily": "0 0 * * *", "@hourly": "0 * * * *"}.get(spec.cron, spec.cron)
        assert dag["cron"] == expected_cron
        assert dag["timezone"] == spec.timezone
        assert _instant(str(dag["start_date"])) == _local(spec.start_date, 0, 0, spec.timezone)
        assert dag["catchup"] is False and dag["max_active_runs"] == 1
        assert dag["is_paused_upon_creation"] is False
        assert dag["default_owner"] == spec.owner
        expected_doc = spec.doc_md + "\n" if spec.doc_md.endswith(".md") else spec.doc_md
        assert dag["doc_md"] == expected_doc  # byte for byte (a path-like card is not read as a file)
        tasks: dict[str, Any] = dag["tasks"]  # type: ignore[assignment]
        order = (
            ["wait_for_features", "start_scoring", "wait_for_scoring"]
            if scoring
            else ["start_materialisation", "wait_for_materialisation"]
        )
        assert list(tasks) == order
        for upstream, downstream in itertools.pairwise(order):
            assert tasks[upstream]["downstream"] == [downstream]
        for task_id, task in tasks.items():
            assert task["owner"] == spec.owner and task["retries"] == spec.retries == 0
            assert task["on_failure_callback"] == ["_on_failure"]
            assert task["execution_timeout"] == spec.execution_timeout_s
            if task_id.startswith("wait_for"):
                assert task["type"] == "PythonSensor" and task["mode"] == "reschedule"
                assert task["module"] == "airflow.providers.standard.sensors.python"
                assert task["poke_interval"] == (spec.sensor_poke_s if scoring else spec.poke_s)  # type: ignore[union-attr]
                assert task["timeout"] == spec.sensor_timeout_s
            else:
                assert task["type"] == "PythonOperator"

    # Schedule semantics, from Airflow's own timetable: the run fired at HH:MM on day D has logical date
    # D HH:MM in the DAG's zone, the first one on or after start_date, and daylight saving is followed.
    def first_runs(spec: ScoringDagSpec | MaterialisationDagSpec) -> list[datetime]:
        runs: list[dict[str, str]] = report.dags[spec.dag_id]["first_runs"]  # type: ignore[assignment]
        assert all(run["run_after"] == run["logical_date"] for run in runs)
        return [_instant(run["logical_date"]) for run in runs]

    new_york, kolkata, weekly, daily, _, _, hourly, later = specs
    assert first_runs(new_york) == [
        _local(start + timedelta(days=d), 6, 0, "America/New_York") for d in range(3)
    ]
    assert [run.utcoffset() for run in first_runs(new_york)] == [timedelta(0)] * 3
    assert [run - _local(start, 0, 0, "UTC") for run in first_runs(new_york)] == [
        timedelta(hours=11),  # 06:00 EST
        timedelta(days=1, hours=10),  # 06:00 EDT: clocks went forward that night
        timedelta(days=2, hours=10),
    ]
    # 03:30 in Kolkata is 22:00 UTC the day before: the run's day is the local one
    assert first_runs(kolkata)[0] == _local(start, 3, 30, "Asia/Kolkata")
    assert first_runs(kolkata)[0].astimezone(ZoneInfo("UTC")).date() == start - timedelta(days=1)
    # 7 March 2026 is a Saturday: the weekly schedule's first run is Monday 9 March
    assert first_runs(weekly) == [
        _local(date(2026, 3, 9) + timedelta(weeks=w), 6, 0, "Europe/London") for w in range(3)
    ]
    # a firing at exactly local midnight of start_date belongs to the first day
    assert first_runs(daily)[0] == _local(start, 0, 0, "UTC")
    assert first_runs(hourly)[:2] == [_local(start, 0, 0, "UTC"), _local(start, 1, 0, "UTC")]
    # with the DAG's own settings (catchup=False), a version going live later first runs on its first day
    assert _instant(str(report.dags[later.dag_id]["next_run"])) == _local(
        later.start_date, 6, 0, "Europe/London"
    )


def _run_dag_test(
    airflow: AirflowEnv, folder: Path, source: str, dag_id: str, logical: datetime, env: dict[str, str]
) -> tuple[int, str]:
    (folder / f"{dag_id}.py").write_text(source, encoding="utf-8")
    result = airflow.airflow(
        "dags",
        "test",
        dag_id,
        logical.isoformat(),
        "--dagfile-path",
        str(folder / f"{dag_id}.py"),
        timeout=150,
        env={"AIRFLOW__CORE__DAGS_FOLDER": str(folder), **env},
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.integration
def test_dags_test_scores_the_local_day_once_its_features_exist(
    airflow: AirflowEnv, gateway: FakeGateway, dag_folder: Path
) -> None:
    spec = scoring_spec(
        timezone="Asia/Kolkata", cron="0 3 * * *", api_url=gateway.url, sensor_poke_s=1, doc_md=HOSTILE
    )
    # 03:00 in Kolkata on 10 March is 21:30 UTC on 9 March: Airflow's {{ ds }} would say 2026-03-09
    logical = _local(date(2026, 3, 10), 3, 0, "Asia/Kolkata")
    code, output = _run_dag_test(
        airflow,
        dag_folder,
        render_scoring_dag(spec),
        spec.dag_id,
        logical,
        {"AIRFLOW_VAR_PF_API_KEY": API_KEY},
    )

    assert code == 0, output[-6000:]
    partition = "/v1/feature-sets/credit_features/versions/3/partitions/2026-03-10"
    looks = gateway.calls("GET", re.escape(partition))
    assert len(looks) == 2  # 404 once (not materialised yet), then good: the sensor was rescheduled
    (started,) = gateway.calls("POST", "/v1/scoring-runs")
    assert started.body == {
        "model": "credit_default",
        "version": 4,
        "feature_set": "credit_features@3",
        "ds": "2026-03-10",
    }
    assert started.headers["idempotency-key"] == f"{spec.dag_id}-2026-03-10"
    # what the real gateway's request model and header pattern accept
    ScoringRunCreate.model_validate(started.body)
    assert re.fullmatch(RUN_ID_PATTERN, started.headers["idempotency-key"])
    polls = gateway.calls("GET", "/v1/scoring-runs/run-1")
    assert len(polls) == 2 and gateway.runs["run-1"]["status"] == "succeeded"
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in gateway.requests)
    assert gateway.calls("POST", "/v1/alerts") == []
    assert looks[-1].headers["accept"] == "application/json"


@pytest.mark.integration
def test_dags_test_reports_a_failed_scoring_run_and_raises_an_alert(
    airflow: AirflowEnv, gateway: FakeGateway, dag_folder: Path
) -> None:
    gateway.script.partition_misses = 0
    gateway.script.polls_before_done = 0
    gateway.script.outcome = "failed"
    spec = scoring_spec(timezone="America/New_York", cron="0 20 * * *", api_url=gateway.url, sensor_poke_s=1)
    logical = _local(date(2026, 3, 10), 20, 0, "America/New_York")  # 00:00 UTC on 11 March
    code, output = _run_dag_test(
        airflow, dag_folder, render_scoring_dag(spec), spec.dag_id, logical, {"PF_API_KEY": API_KEY}
    )

    assert code != 0 and "DagRun failed" in output, output[-6000:]
    (started,) = gateway.calls("POST", "/v1/scoring-runs")
    assert started.body is not None and started.body["ds"] == "2026-03-10"
    (alert,) = gateway.calls("POST", "/v1/alerts")
    assert alert.body is not None
    assert alert.body["dedup_key"] == f"airflow:{spec.dag_id}"
    assert alert.body["check"] == "scoring_dag" and alert.body["severity"] == "error"
    assert alert.body["model_name"] == "credit_default"
    assert alert.body["feature_set_name"] == "credit_features"
    assert "wait_for_scoring failed for 2026-03-10" in alert.body["summary"]
    assert gateway.script.reason in alert.body["summary"]
    assert set(alert.body["links"]) <= {"airflow_log"}
    assert alert.body["details"]["task_id"] == "wait_for_scoring"
    assert alert.body["details"]["ds"] == "2026-03-10" and alert.body["details"]["model_version"] == 4
    AlertCreate.model_validate(alert.body)  # the real alerts API's request model (extra fields refused)

    # An operator fixes the cause and clears the run: the failed run's key is replayed, so a new run
    # starts under the next key (a retry of a run still in flight would have found that run instead).
    gateway.script.outcome = "succeeded"
    code, output = _run_dag_test(
        airflow, dag_folder, render_scoring_dag(spec), spec.dag_id, logical, {"PF_API_KEY": API_KEY}
    )
    assert code == 0, output[-6000:]
    keys = [r.headers["idempotency-key"] for r in gateway.calls("POST", "/v1/scoring-runs")]
    assert keys == [f"{spec.dag_id}-2026-03-10", f"{spec.dag_id}-2026-03-10", f"{spec.dag_id}-2026-03-10-r1"]
    assert gateway.runs["run-2"]["status"] == "succeeded" and len(gateway.calls("POST", "/v1/alerts")) == 1


@pytest.mark.integration
def test_dags_test_materialises_the_local_day(
    airflow: AirflowEnv, gateway: FakeGateway, dag_folder: Path
) -> None:
    spec = materialisation_spec(
        feature_set_name="credit features", timezone="Asia/Kolkata", api_url=gateway.url, poke_s=1
    )
    logical = _local(date(2026, 3, 10), 2, 0, "Asia/Kolkata")  # 20:30 UTC on 9 March
    code, output = _run_dag_test(
        airflow,
        dag_folder,
        render_materialisation_dag(spec),
        spec.dag_id,
        logical,
        {"AIRFLOW_VAR_PF_API_KEY": API_KEY},
    )

    assert code == 0, output[-6000:]
    (started,) = gateway.calls("POST", "/v1/feature-sets/credit%20features/versions/3/materialisations")
    assert started.body == {"start_ds": "2026-03-10", "end_ds": "2026-03-10"}
    assert started.headers["idempotency-key"] == f"{spec.dag_id}-2026-03-10"  # a retry finds this job
    MaterialisationCreate.model_validate(started.body)
    assert len(gateway.calls("GET", "/v1/jobs/run-1")) == 2  # running, then succeeded
    assert gateway.runs["run-1"]["status"] == "succeeded"
    assert gateway.calls("POST", "/v1/alerts") == []
