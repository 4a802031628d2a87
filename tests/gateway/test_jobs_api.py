"""Job submission and job status over HTTP, with an in-memory sink."""

from __future__ import annotations

import yaml

from pfactory.contracts import topics
from pfactory.contracts.events import Envelope, MaterialisationRequested, TrainRequested
from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from tests.gateway.support import FEATURE_SET_YAML, MODEL_YAML, YAML, RecordingSink, eventually, serving


async def test_yaml_model_is_accepted_and_its_train_request_published(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    sink = RecordingSink()
    async with serving(create_app(gateway_settings, sink=sink), admin_key) as client:
        response = await client.post("/v1/jobs?filename=model.yaml", content=MODEL_YAML, headers=YAML)
        assert response.status_code == 202, response.text
        created = response.json()
        job_id = created["job_id"]
        assert created == {
            "job_id": job_id,
            "kind": "train",
            "name": "credit-default",
            "status": "accepted",
            "location": f"/v1/jobs/{job_id}",
            "replayed": False,
        }
        assert response.headers["Location"] == f"/v1/jobs/{job_id}"

        await eventually(lambda: bool(sink.for_job(job_id)), what="the train request to be published")
        envelope, topic, key = sink.published[0]
        event = envelope.open_as(TrainRequested)
        assert (topic, key) == (topics.TRAIN_REQUESTED, job_id)
        assert (event.job_id, event.model_name, event.feature_set.name, event.feature_set.version) == (
            job_id,
            "credit-default",
            "credit-features",
            "3",
        )
        assert (
            event.config["spec"]["pipeline"]["estimator"]["import"]
            == "sklearn.linear_model.LogisticRegression"
        )
        assert envelope.producer == "gateway" and envelope.correlation_id == job_id

        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "accepted" and job["terminal"] is False
        assert job["submitted_by"] == "bootstrap-admin"
        assert job["request_event_id"] == envelope.event_id


async def test_json_feature_set_becomes_a_materialisation_request_with_its_dates(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    sink = RecordingSink()
    async with serving(create_app(gateway_settings, sink=sink), admin_key) as client:
        body = {"config": yaml.safe_load(FEATURE_SET_YAML), "start_ds": "2024-03-01", "end_ds": "2024-03-07"}
        response = await client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert response.json()["kind"] == "materialise"
        await eventually(lambda: bool(sink.for_job(job_id)), what="the materialisation request")
        envelope, topic, _ = sink.published[0]
        event = envelope.open_as(MaterialisationRequested)
        assert topic == topics.MATERIALISATION_REQUESTED
        assert str(event.feature_set) == "credit-features@3"
        assert (str(event.start_ds), str(event.end_ds)) == ("2024-03-01", "2024-03-07")


async def test_config_yaml_in_json_is_accepted(gateway_settings: GatewaySettings, admin_key: str) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        response = await client.post("/v1/jobs", json={"config_yaml": MODEL_YAML, "filename": "m.yaml"})
        assert response.status_code == 202, response.text


async def test_broken_yaml_is_refused_with_line_and_column_and_changes_nothing(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    sink = RecordingSink()
    broken = MODEL_YAML.replace("  task: binary_classification", "  task: [binary_classification")
    async with serving(create_app(gateway_settings, sink=sink), admin_key) as client:
        response = await client.post("/v1/jobs?filename=model.yaml", content=broken, headers=YAML)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == "invalid_config"
        issue = body["issues"][0]
        assert issue["file"] == "model.yaml"
        assert isinstance(issue["line"], int) and isinstance(issue["column"], int)
        assert "YAML" in issue["message"]
        assert "model.yaml:" in body["summary"]
        assert (await client.get("/v1/jobs")).json()["count"] == 0
    assert sink.published == []


async def test_unknown_field_is_located_with_a_suggestion(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    typo = MODEL_YAML.replace("  task: binary", "  tsk: binary")
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        response = await client.post("/v1/jobs?filename=model.yaml", content=typo, headers=YAML)
        assert response.status_code == 422
        issues = response.json()["issues"]
        located = [issue for issue in issues if issue["path"] == "spec.tsk"]
        assert (
            located
            and located[0]["line"] == MODEL_YAML.splitlines().index("  task: binary_classification") + 1
        )
        assert located[0]["suggestion"] == "task"


async def test_request_mistakes_are_422_415_and_404(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        both = await client.post("/v1/jobs", json={"config": {}, "config_yaml": "x: 1"})
        assert both.status_code == 422 and both.json()["code"] == "invalid_config"
        dated_model = await client.post("/v1/jobs?start_ds=2024-01-01", content=MODEL_YAML, headers=YAML)
        assert dated_model.status_code == 422
        assert dated_model.json()["issues"][0]["path"] == "start_ds"
        text = await client.post("/v1/jobs", content=b"hello", headers={"Content-Type": "text/plain"})
        assert text.status_code == 415 and text.json()["code"] == "unsupported_media_type"
        missing = await client.get("/v1/jobs/does-not-exist")
        assert missing.status_code == 404
        assert missing.json() == {
            "detail": "no job with id 'does-not-exist' (list jobs with GET /v1/jobs)",
            "code": "job_not_found",
        }
        bad_limit = await client.get("/v1/jobs?limit=0")
        assert bad_limit.status_code == 422 and bad_limit.json()["issues"][0]["path"] == "query.limit"


async def test_a_yaml_body_is_never_read_as_a_server_path(
    gateway_settings: GatewaySettings, admin_key: str, tmp_path: object
) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        response = await client.post("/v1/jobs", content="/etc/passwd.yaml", headers=YAML)
        assert response.status_code == 422
        assert all("cannot read" not in issue["message"] for issue in response.json()["issues"])


async def test_jobs_are_listed_newest_first_with_keyset_pagination_and_filters(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        submitted = []
        for index in range(5):
            config = FEATURE_SET_YAML if index % 2 else MODEL_YAML
            submitted.append((await client.post("/v1/jobs", content=config, headers=YAML)).json()["job_id"])
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/jobs", params=params)).json()
            pages += 1
            seen += [job["job_id"] for job in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == list(reversed(submitted))
        trains = (await client.get("/v1/jobs", params={"kind": "train"})).json()
        assert [job["job_id"] for job in trains["data"]] == [submitted[4], submitted[2], submitted[0]]
        named = (
            await client.get("/v1/jobs", params={"name": "credit-features", "status": "accepted"})
        ).json()
        assert named["count"] == 2
        assert (await client.get("/v1/jobs", params={"status": "failed"})).json() == {
            "data": [],
            "count": 0,
            "next_cursor": None,
        }
        bad = await client.get("/v1/jobs", params={"cursor": "nonsense"})
        assert bad.status_code == 422 and bad.json()["issues"][0]["path"] == "cursor"


async def test_health_needs_no_key_and_ready_reports_the_outbox(gateway_settings: GatewaySettings) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink())) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = (await client.get("/ready")).json()
        assert ready["status"] == "ready" and ready["store"] == "ok"
        assert ready["outbox"]["pending"] == 0


def test_envelope_round_trip_is_what_the_outbox_stores() -> None:
    event = TrainRequested(job_id="j", model_name="m", feature_set={"name": "f", "version": "1"}, config={})
    envelope = Envelope.wrap(event, producer="gateway", event_id="fixed")
    assert Envelope.model_validate_json(envelope.model_dump_json()) == envelope
