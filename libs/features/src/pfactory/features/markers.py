"""Reading what ``_SUCCESS`` markers record, for lineage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pfactory.features.reader import GoodPartition


def query_hashes(partitions: Sequence[GoodPartition]) -> dict[str, str]:
    """SQL model name → sha256 from the markers' ``sql_hashes`` (``config_hash`` when they carry none).

    When days were built by different SQL, the hash of the latest day keeps the plain name and each
    other one is kept as ``<name>@<first ds it built>``, so lineage shows the change instead of
    hiding it.

    Args:
        partitions: the good days read, in any order.

    Returns:
        e.g. ``{"credit_features": "9f2c…", "applicant_base": "41ab…"}``.
    """
    first: dict[str, dict[str, date]] = {}
    last: dict[str, dict[str, date]] = {}
    for partition in sorted(partitions, key=lambda p: p.ds):
        marker = partition.marker
        hashes = marker.get("sql_hashes") or {"config_hash": marker.get("config_hash")}
        for model, digest in hashes.items():
            if digest is not None:
                first.setdefault(str(model), {}).setdefault(str(digest), partition.ds)
                last.setdefault(str(model), {})[str(digest)] = partition.ds
    result: dict[str, str] = {}
    for model, seen in last.items():
        latest = max(seen, key=seen.__getitem__)
        result[model] = latest
        result |= {f"{model}@{first[model][d].isoformat()}": d for d in seen if d != latest}
    return result
