"""An upstream system publishes straight to Kafka with librdkafka (confluent-kafka), not our code.

confluent-kafka shares no code with aiokafka: it builds the envelope as plain JSON, produces a
``TrainRequested`` that the real trainer process picks up, and reads the trainer's answers back
through its own consumer group.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from tests.workers.support import http_status, running_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _hand_built_train_request(job_id: str) -> bytes:
    envelope = {
        "event_id": str(uuid.uuid4()),
        "type": "TrainRequested",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": job_id,
        "causation_id": None,
        "producer": "upstream-loan-system",
        "payload": {
            "job_id": job_id,
            "model_name": "credit_default",
            "feature_set": {"name": "credit_features", "version": "1"},
            "config": {"kind": "Model"},
            "submitted_by": "upstream-loan-system",
        },
    }
    return json.dumps(envelope).encode()


@pytest.mark.timeout(420)  # see the deadline below
async def test_librdkafka_producer_drives_the_trainer_and_reads_its_answers(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    await ensure_topics(bus_settings)
    job_id = f"upstream-{uuid.uuid4().hex[:8]}"
    with running_worker("trainer", bus_settings, tmp_path) as worker:
        wait_for(lambda: http_status(f"{worker.url}/health") == 200, 90, "trainer /health", worker.log)

        producer = Producer({"bootstrap.servers": bus_settings.bootstrap_servers, "acks": "all"})
        delivered: list[str] = []
        producer.produce(
            topics.TRAIN_REQUESTED,
            key=job_id.encode(),
            value=_hand_built_train_request(job_id),
            on_delivery=lambda err, msg: delivered.append("ok" if err is None else str(err)),
        )
        assert producer.flush(10) == 0
        assert delivered == ["ok"]

        consumer = Consumer(
            {
                "bootstrap.servers": bus_settings.bootstrap_servers,
                "group.id": f"upstream-reader-{job_id}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )
        consumer.subscribe([topics.JOB_STATUS])
        statuses: list[dict[str, object]] = []
        # the worker's fresh consumer group starts at the topic's beginning, so it may first re-train
        # earlier tests' requests (the e2e 12-trial sweep among them) before it reaches this one
        deadline = time.monotonic() + 300
        try:
            while not statuses and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                envelope = json.loads(message.value())
                if envelope["correlation_id"] == job_id:
                    statuses.append(envelope["payload"])
        finally:
            consumer.close()

    # the hand-built config is only a kind: the trainer refuses it at once and says why
    assert [s["status"] for s in statuses] == ["failed"], worker.log()[-3000:]
    assert "the model config does not validate" in str(statuses[0]["reason"])
    assert "spec" in str(statuses[0]["reason"])
