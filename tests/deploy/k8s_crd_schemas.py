"""JSON Schemas of the custom resources in deploy/k8s, which kubernetes-validate has no schema for.

kubernetes-validate knows only the built-in kinds: for any other kind it raises ``SchemaNotFoundError``
(the CLI prints a warning and passes the object). These schemas are written from the documented CRD
specs (KEDA's "ScaledObject specification" and "Apache Kafka" scaler pages, keda.sh/docs/2.x; Strimzi's
``KafkaTopic`` v1beta2 CRD and the "KafkaTopicSpec schema reference"), limited to the fields the manifests
use and strict (``additionalProperties: false``) on them, so a misspelt field fails instead of being
ignored by the operator.
"""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "namespace": _NAME,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_DIGITS = {"type": "string", "pattern": r"^[0-9]+$"}
_BOOLEAN_STRING = {"type": "string", "enum": ["true", "false"]}

SCALED_OBJECT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "keda.sh/v1alpha1 ScaledObject (the fields deploy/k8s uses)",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": _NAME,
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"const": "kafka"},
                            "name": {"type": "string"},
                            "metadata": {
                                "type": "object",
                                "required": ["bootstrapServers", "consumerGroup", "topic"],
                                "additionalProperties": False,
                                # the kafka scaler's parameters; every value is a string
                                "properties": {
                                    "bootstrapServers": {"type": "string", "minLength": 1},
                                    "consumerGroup": {"type": "string", "minLength": 1},
                                    "topic": {"type": "string", "minLength": 1},
                                    "lagThreshold": _DIGITS,
                                    "activationLagThreshold": _DIGITS,
                                    "offsetResetPolicy": {"enum": ["latest", "earliest"]},
                                    "allowIdleConsumers": _BOOLEAN_STRING,
                                    "scaleToZeroOnInvalidOffset": _BOOLEAN_STRING,
                                    "excludePersistentLag": _BOOLEAN_STRING,
                                    "limitToPartitionsWithLag": _BOOLEAN_STRING,
                                },
                            },
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {"name": _NAME},
                            },
                        },
                    },
                },
            },
        },
    },
}

KAFKA_TOPIC: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "kafka.strimzi.io/v1beta2 KafkaTopic (the fields deploy/k8s uses)",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaTopic"},
        "metadata": {
            **_METADATA,
            "properties": {
                **_METADATA["properties"],
                # the Topic Operator only reconciles topics labelled with its Kafka cluster
                "labels": {**_STRING_MAP, "required": ["strimzi.io/cluster"]},
            },
            "required": ["name", "labels"],
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "topicName": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
                },
            },
        },
    },
}

CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): KAFKA_TOPIC,
}
