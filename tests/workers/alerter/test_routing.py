"""Routing rules: first match wins, globs, the built-in default, and start-up errors that say where."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pfactory.alerter.model import Action, key_id
from pfactory.alerter.routing import UNMATCHED, RoutesFileError, load_routes
from pfactory.contracts.events import AlertRaised, Severity
from tests.workers.alerter.conftest import OTHER_KEY, ROUTING_KEY


def alert(**fields: Any) -> AlertRaised:
    values: dict[str, Any] = {
        "dedup_key": "k",
        "check": "feature_validation",
        "severity": Severity.ERROR,
        "summary": "s",
        "source": "test",
    }
    values.update(fields)
    return AlertRaised(**values)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


def test_the_built_in_routes_page_critical_and_error_and_notify_the_rest() -> None:
    table = load_routes(None, SecretStr(ROUTING_KEY))
    for severity, action in [
        (Severity.CRITICAL, Action.PAGE),
        (Severity.ERROR, Action.PAGE),
        (Severity.WARNING, Action.NOTIFY),
        (Severity.INFO, Action.NOTIFY),
    ]:
        route = table.route(alert(severity=severity))
        assert route.action is action, severity
        assert (route.routing_key is not None) is (action is Action.PAGE)


def test_first_match_wins_with_globs_on_check_model_and_feature_set(tmp_path: Path) -> None:
    routes = write(
        tmp_path,
        f"""
routes:
  - name: drift-ml
    check: drift
    feature_set: "credit_*"
    action: page
    routing_key: {OTHER_KEY}
  - name: quiet-drift
    check: "dri*"
    action: notify
  - name: churn-model
    model: "churn-*"
    severity: critical
    action: page
  - name: rest
    action: drop
""",
    )
    table = load_routes(routes, SecretStr(ROUTING_KEY))
    drift_credit = table.route(alert(check="drift", feature_set_name="credit_features"))
    assert (drift_credit.rule, drift_credit.action) == ("drift-ml", Action.PAGE)
    assert drift_credit.routing_key is not None and drift_credit.routing_key.get_secret_value() == OTHER_KEY
    assert table.route(alert(check="drift", feature_set_name="loans")).rule == "quiet-drift"
    # an alert without a feature set never matches a feature_set pattern
    assert table.route(alert(check="drift")).rule == "quiet-drift"
    churn = table.route(alert(model_name="churn-v2", severity=Severity.CRITICAL))
    assert churn.rule == "churn-model" and churn.routing_key is not None
    assert churn.routing_key.get_secret_value() == ROUTING_KEY  # the default key
    assert table.route(alert(model_name="churn-v2", severity=Severity.ERROR)).action is Action.DROP
    assert set(table.routing_keys()) == {key_id(SecretStr(ROUTING_KEY)), key_id(SecretStr(OTHER_KEY))}


def test_an_alert_no_route_matches_is_notified(tmp_path: Path) -> None:
    table = load_routes(write(tmp_path, "routes:\n  - check: drift\n    action: page\n"), None)
    route = table.route(alert(check="scoring_run"))
    assert (route.rule, route.action) == (UNMATCHED, Action.NOTIFY)
    # a page route without any key is PagerDuty-off ("would page")
    assert table.route(alert(check="drift")).routing_key is None
    assert table.pages_without_key() == ["routes[0]"]


def test_a_routing_key_can_come_from_the_environment(tmp_path: Path) -> None:
    routes = write(tmp_path, "routes:\n  - action: page\n    routing_key_env: PD_KEY_TEAM\n")
    table = load_routes(routes, None, environ={"PD_KEY_TEAM": OTHER_KEY})
    key = table.route(alert()).routing_key
    assert key is not None and key.get_secret_value() == OTHER_KEY
    with pytest.raises(
        RoutesFileError,
        match=r"line 3: routes\[0\]\.routing_key_env: environment variable PD_KEY_TEAM is not set",
    ):
        load_routes(routes, None, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "routes:\n  - check: drift\n    sevrity: critical\n    action: page\n",
            r"line 3: routes\[0\]\.sevrity: unknown field 'sevrity' \(did you mean 'severity'\?\)",
        ),
        (
            "routes:\n  - action: page\n  - severity: [warning, urgent]\n    action: notify\n",
            r"line 3: routes\[1\]\.severity\[1\]: Input should be 'critical', 'error', 'warning' or 'info'",
        ),
        (
            "routes:\n  - check: drift\n    action: escalate\n",
            r"line 3: routes\[0\]\.action: Input should be 'page', 'notify' or 'drop'",
        ),
        ("routes:\n  - check: drift\n", r"line 2: routes\[0\]\.action: Field required"),
        (
            f"routes:\n  - action: notify\n    routing_key: {ROUTING_KEY}\n",
            r"line 2: routes\[0\]: a routing key is only used by action page, this route's action is notify",
        ),
        (
            "routes:\n  - action: page\n    routing_key: abc\n",
            r"line 3: routes\[0\]\.routing_key: .*has 3 characters; a PagerDuty routing key has 32",
        ),
        ("routes: []\n", r"line 1: routes: List should have at least 1 item"),
        ("- action: page\n", r"line 1: the document: the file must be a mapping with a 'routes' list"),
        ("routes:\n  - action: page\n  check: x\n", r"line 3: malformed YAML"),
        (
            "routes:\n  - action: page\n    action: drop\n",
            r"line 3: duplicate key 'action' \(first defined on line 2\)",
        ),
    ],
)
def test_a_bad_routes_file_says_which_line_and_field_and_how_to_fix(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RoutesFileError) as raised:
        load_routes(path, None)
    message = str(raised.value)
    assert str(path) in message
    assert "unset PF_ALERTER_ROUTES_FILE" in message and "action (page, notify or drop)" in message
    assert re.search(expected, message), message


def test_a_missing_routes_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RoutesFileError, match=r"routes\.yaml cannot be read"):
        load_routes(tmp_path / "routes.yaml", None)
