"""The Materialisation issue's "done when", through the whole embedded stack.

The example credit data is generated, the example feature set is submitted with a backfill and
ends with validated partitions and lineage; a template with an unknown ``ref()`` and a day that
breaks an expectation each fail with a precise reason and leave no partition marked good.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pfactory.cli.client import GatewayClient
from pfactory.cli.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
START = date(2024, 1, 1)
DAYS = 3


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_data", EXAMPLES / "credit" / "generate_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("backfill")  # the stack's working directory: data/raw lives here
    _generator().generate(workdir / "data" / "raw", START, DAYS + 1, 300, 7, progress=lambda _: None)
    running = Stack(
        workdir / ".pfactory",
        prefer_default_ports=False,
        health_timeout_s=120,
        extra_env={"PF_BUS_SESSION_TIMEOUT_MS": "3000", "PF_BUS_HEARTBEAT_INTERVAL_MS": "500"},
    )
    with running:
        yield running


def _wait_terminal(client: GatewayClient, job_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get_job(job_id)
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout_s} s: {job}"
        time.sleep(0.5)


def _features_yaml(version: int, *, replace: tuple[str, str] | None = None) -> str:
    text = (EXAMPLES / "credit_features.yaml").read_text()
    text = text.replace("  version: 1\n", f"  version: {version}\n", 1)
    if replace:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1], 1)
    return text


def _partition(stack: Stack, version: int, ds: date) -> Path:
    return stack.home / "features" / "feature_set=credit-features" / f"version={version}" / f"ds={ds}"


def test_a_backfill_produces_validated_partitions_and_lineage(stack: Stack) -> None:
    end = date(2024, 1, DAYS)
    with GatewayClient(stack.gateway_url, stack.api_key) as client:
        accepted = client.submit(
            _features_yaml(1), "credit_features.yaml", start_ds=str(START), end_ds=str(end)
        )
        job = _wait_terminal(client, accepted["job_id"])
        assert job["status"] == "succeeded", job
        assert job["progress"]["done"] == job["progress"]["total"] == DAYS
        for day in range(1, DAYS + 1):
            folder = _partition(stack, 1, date(2024, 1, day))
            assert (folder / "_SUCCESS").exists(), f"no good marker in {folder}"
            assert pq.read_table(folder / "part-0.parquet").num_rows == 300
        lineage = client._json(client._request("GET", "/v1/feature-sets/credit-features/versions/1/lineage"))
        by_feature = {row["feature"]: row for row in lineage["data"]}
        assert by_feature["debt_to_income"]["source_columns"] == [
            "applicants.annual_income",
            "applicants.monthly_debt_payments",
        ]
        assert by_feature["debt_to_income"]["origin"] == "derived"


def test_an_unknown_ref_fails_with_the_model_and_line_and_marks_nothing_good(stack: Stack) -> None:
    broken = _features_yaml(2, replace=("{{ ref('bureau_summary') }}", "{{ ref('bureau_sumary') }}"))
    with GatewayClient(stack.gateway_url, stack.api_key) as client:
        accepted = client.submit(broken, "credit_features.yaml", start_ds=str(START), end_ds=str(START))
        job = _wait_terminal(client, accepted["job_id"])
    assert job["status"] == "failed"
    assert "bureau_sumary" in job["reason"] and "bureau_summary" in job["reason"], job["reason"]
    assert "line" in job["reason"], job["reason"]
    assert not list(_partition(stack, 2, START).parent.glob("ds=*/_SUCCESS"))


def test_a_day_that_breaks_an_expectation_is_quarantined_not_published(stack: Stack) -> None:
    bad_day = date(2024, 1, DAYS + 1)
    applicants = stack.home.parent / "data" / "raw" / "applicants" / f"ds={bad_day}" / "part-0.parquet"
    table = pq.read_table(applicants)
    ages = table.column("age").to_pylist()
    ages[0] = 150  # the feature set declares age between 18 and 100
    column = pa.array(ages, type=table.schema.field("age").type)  # same type as every other day
    pq.write_table(table.set_column(table.schema.get_field_index("age"), "age", column), applicants)
    with GatewayClient(stack.gateway_url, stack.api_key) as client:
        accepted = client.submit(
            _features_yaml(1), "credit_features.yaml", start_ds=str(bad_day), end_ds=str(bad_day)
        )
        job = _wait_terminal(client, accepted["job_id"])
    assert job["status"] == "failed"
    assert str(bad_day) in job["reason"] and "age" in job["reason"], job["reason"]
    folder = _partition(stack, 1, bad_day)
    assert not (folder / "_SUCCESS").exists()
    quarantined = stack.home / "quarantine" / "feature_set=credit-features" / "version=1" / f"ds={bad_day}"
    report = json.loads((quarantined / "_validation.json").read_text())
    failing = [check for check in report["results"] if not check["success"]]
    assert [(c["column"], c["unexpected_examples"]) for c in failing] == [("age", [150])], failing
