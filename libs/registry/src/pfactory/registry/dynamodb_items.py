"""The DynamoDB single-table layout: item keys, GSIs and the (de)serialisation of version items.

One table, ``pk`` (hash) + ``sk`` (range), all strings:

===================  ============================  =============================================
item                 pk                            sk
===================  ============================  =============================================
pair counter         ``PAIR#<pair>``               ``#COUNTER`` (``next_version``, ADD 1)
allocation           ``PAIR#<pair>``               ``#ALLOC#<idempotency key>`` (version, state)
alias pointer        ``PAIR#<pair>``               ``#ALIAS#<alias>`` (version)
version              ``PAIR#<pair>``               ``V#<version, 10 digits>`` (doc, status, rev, seq)
change-log head      ``#CHANGES``                  ``#HEAD`` (seq)
change-log entry     ``#CHANGES``                  ``<seq, 20 digits>`` (pair, version, expires_at)
model catalog        ``#MODELS``                   ``<model name>`` (written with a first commit)
pair catalog         ``MODEL#<model name>``        ``PAIR#<pair>`` (written with a pair's first commit)
===================  ============================  =============================================

GSI ``by_status``: ``gsi1pk = STATUS#<status>``, ``gsi1sk = <pair>#<version>`` (get-live, list by
pair and status, query by status). GSI ``by_feature_set``: ``gsi2pk = FS#<fs name>``,
``gsi2sk = <fs version>#<pair>#<version>`` (which versions were trained on a feature set).
Only version items carry GSI keys, so counters, allocations and the change log stay out of them.
"""

from __future__ import annotations

from typing import Any

from pfactory.registry.model import ModelVersion, PairKey

STATUS_INDEX = "by_status"
FEATURE_SET_INDEX = "by_feature_set"
CHANGES_PK = "#CHANGES"
MODELS_PK = "#MODELS"
PAIR_SK_PREFIX = "PAIR#"
CHANGES_HEAD_SK = "#HEAD"
VERSION_SK_PREFIX = "V#"

Item = dict[str, dict[str, Any]]


def s(value: str) -> dict[str, str]:
    """A DynamoDB string attribute."""
    return {"S": value}


def n(value: int) -> dict[str, str]:
    """A DynamoDB number attribute."""
    return {"N": str(value)}


def pair_pk(pair: PairKey) -> str:
    """Partition key of everything a pair owns."""
    return f"PAIR#{pair}"


def version_sk(version: int) -> str:
    """Sort key of a version item; zero-padded so keys sort by number."""
    return f"{VERSION_SK_PREFIX}{version:010d}"


def version_key(pair: PairKey, version: int) -> Item:
    """Primary key of a version item."""
    return {"pk": s(pair_pk(pair)), "sk": s(version_sk(version))}


def counter_key(pair: PairKey) -> Item:
    """Primary key of a pair's version counter."""
    return {"pk": s(pair_pk(pair)), "sk": s("#COUNTER")}


def allocation_key(pair: PairKey, idempotency_key: str) -> Item:
    """Primary key of an allocation."""
    return {"pk": s(pair_pk(pair)), "sk": s(f"#ALLOC#{idempotency_key}")}


def alias_key(pair: PairKey, alias: str) -> Item:
    """Primary key of an alias pointer."""
    return {"pk": s(pair_pk(pair)), "sk": s(f"#ALIAS#{alias}")}


def model_pk(model_name: str) -> str:
    """Partition key of a model's pair catalog."""
    return f"MODEL#{model_name}"


def catalog_items(pair: PairKey) -> list[Item]:
    """The catalog items a commit writes (idempotent puts): the model's name and the pair."""
    return [
        {"pk": s(MODELS_PK), "sk": s(pair.model_name)},
        {"pk": s(model_pk(pair.model_name)), "sk": s(f"{PAIR_SK_PREFIX}{pair}"), "pair": s(str(pair))},
    ]


def change_sk(seq: int) -> str:
    """Sort key of a change-log entry."""
    return f"{seq:020d}"


def status_sk(pair: PairKey, version: int | None = None) -> str:
    """``by_status`` sort key (or its pair prefix when ``version`` is None)."""
    return f"{pair}#" if version is None else f"{pair}#{version:010d}"


def version_item(record: ModelVersion, *, rev: int, seq: int) -> Item:
    """The item stored for a version: the JSON document plus key, index and concurrency attributes."""
    pair = record.pair
    return {
        **version_key(pair, record.version),
        "doc": s(record.model_dump_json()),
        "status": s(record.status.value),
        "rev": n(rev),
        "seq": n(seq),
        "gsi1pk": s(f"STATUS#{record.status.value}"),
        "gsi1sk": s(status_sk(pair, record.version)),
        "gsi2pk": s(f"FS#{record.feature_set.name}"),
        "gsi2sk": s(f"{record.feature_set.version}#{status_sk(pair, record.version)}"),
    }


def record_of(item: Item) -> ModelVersion:
    """The version a version item holds."""
    return ModelVersion.model_validate_json(item["doc"]["S"])


def table_definition(table_name: str) -> dict[str, Any]:
    """``CreateTable`` arguments: the key schema and both GSIs (projection ALL), on-demand billing."""
    attributes = ["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"]

    def _index(name: str, hash_key: str, range_key: str) -> dict[str, Any]:
        return {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": hash_key, "KeyType": "HASH"},
                {"AttributeName": range_key, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }

    return {
        "TableName": table_name,
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"} for name in attributes],
        "GlobalSecondaryIndexes": [
            _index(STATUS_INDEX, "gsi1pk", "gsi1sk"),
            _index(FEATURE_SET_INDEX, "gsi2pk", "gsi2sk"),
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
