"""The version lifecycle as pure functions: legal and illegal moves, gates and overrides, aliases."""

from __future__ import annotations

import pytest

from pfactory.registry import model
from pfactory.registry.errors import GateFailedError, IllegalTransitionError
from pfactory.registry.layout import VersionLayout
from pfactory.registry.model import PairKey, VersionStatus
from tests.registry.factories import PAIR, make_version


def test_pair_key_round_trips_through_its_text_form() -> None:
    assert str(PAIR) == "model=credit_default/feature_set=credit_features@3"
    assert PairKey.parse(str(PAIR)) == PAIR
    with pytest.raises(ValueError, match="pair key"):
        PairKey.parse("credit_default@3")
    with pytest.raises(ValueError, match="model name"):
        PairKey.of("../etc", "fs", "1")


def test_layout_puts_every_file_under_the_version_folder() -> None:
    layout = VersionLayout(PAIR, 7)
    prefix = "models/model=credit_default/feature_set=credit_features@3/version=7/"
    assert layout.prefix == prefix
    assert [layout.model, layout.card_json, layout.card_md, layout.config, layout.metrics] == [
        prefix + name for name in ("model.skops", "card.json", "card.md", "config.yaml", "metrics.json")
    ]


def test_the_happy_path_records_each_move_in_the_audit_trail() -> None:
    record = make_version(PAIR, 1, "job-1")
    for status in (VersionStatus.APPROVED, VersionStatus.LIVE, VersionStatus.ARCHIVED):
        record = model.transition(record, status, actor="alice", reason=f"to {status}")
    assert record.status is VersionStatus.ARCHIVED
    assert [(e.from_, e.to, e.actor) for e in record.audit] == [
        ("candidate", "approved", "alice"),
        ("approved", "live", "alice"),
        ("live", "archived", "alice"),
    ]
    assert record.audit[0].model_dump(mode="json")["from"] == "candidate"


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (VersionStatus.CANDIDATE, VersionStatus.LIVE),
        (VersionStatus.LIVE, VersionStatus.CANDIDATE),
        (VersionStatus.REJECTED, VersionStatus.APPROVED),
        (VersionStatus.ARCHIVED, VersionStatus.LIVE),
    ],
)
def test_illegal_moves_are_refused_naming_what_is_allowed(start: VersionStatus, to: VersionStatus) -> None:
    record = make_version(PAIR, 2, "job-2", status=start)
    with pytest.raises(IllegalTransitionError, match=f"cannot move from {start} to {to}") as caught:
        model.transition(record, to, actor="alice")
    assert "version=2" in str(caught.value)


def test_a_version_that_failed_a_gate_needs_an_override_with_a_reason() -> None:
    record = make_version(PAIR, 3, "job-3", gates={"fairness": False, "validation": True})
    with pytest.raises(GateFailedError, match="failed its gates \\(fairness\\)"):
        model.transition(record, VersionStatus.APPROVED, actor="alice")
    with pytest.raises(GateFailedError, match="needs a reason"):
        model.transition(record, VersionStatus.APPROVED, actor="admin", override=True, reason=" ")
    approved = model.transition(
        record, VersionStatus.APPROVED, actor="admin", override=True, reason="risk committee sign-off"
    )
    assert approved.audit[-1].action == "override"
    assert approved.audit[-1].reason == "risk committee sign-off"
    # the override that approved it covers going live on schedule; the move is a plain transition
    live = model.transition(approved, VersionStatus.LIVE, actor="scheduler", reason="live from tomorrow")
    assert (live.status, live.audit[-1].action) == (VersionStatus.LIVE, "transition")
    # a version approved again after a rollback without an override is refused going live
    rolled_back = model.transition(live, VersionStatus.ARCHIVED, actor="scheduler")
    sneaked = rolled_back.model_copy(
        update={
            "status": VersionStatus.APPROVED,
            "audit": (*rolled_back.audit, approved.audit[-1].model_copy(update={"action": "transition"})),
        }
    )
    with pytest.raises(GateFailedError, match="becoming live needs an admin override"):
        model.transition(sneaked, VersionStatus.LIVE, actor="scheduler")
    # rejecting it needs no override
    assert model.transition(record, VersionStatus.REJECTED, actor="alice").status is VersionStatus.REJECTED


def test_aliases_are_audited_and_refused_on_rejected_versions() -> None:
    record = model.set_alias(make_version(PAIR, 4, "job-4"), "champion", actor="alice")
    assert record.aliases == {"champion"}
    assert record.audit[-1].action == "alias_set"
    record = model.remove_alias(record, "champion", actor="bob", reason="moved to 5")
    assert record.aliases == frozenset()
    rejected = make_version(PAIR, 5, "job-5", status=VersionStatus.REJECTED)
    with pytest.raises(IllegalTransitionError, match="rejected"):
        model.set_alias(rejected, "champion", actor="alice")
