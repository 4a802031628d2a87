"""The scorer's alert events, built from a run's outcome. No network imports.

One incident per model and feature set and check (the alert router keys incidents by ``dedup_key``):

* ``scoring:<model>@<feature set>`` (check ``scoring_run``, error): raised by a failed run, resolved
  by a succeeded one. A run that failed before its version resolved, with no feature set in the
  request, is keyed ``<model>@unresolved``.
* ``drift:<model>@<feature set>`` (check ``drift``, warning): raised when an input's or the score's
  PSI passes the model's threshold, resolved by a day measured without drift.

Links point at the gateway (the job; the version's model card) when its URL is configured; the
details always name the job, model, version, feature set and day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pfactory.contracts.events import AlertRaised, AlertResolved, FeatureSetRef, ScoringRequested, Severity

SOURCE = "scorer"
"""The alerts' ``source``: the scorer's service name (``pfactory.scorer.service.SERVICE``, which imports this)."""
SCORING_CHECK, DRIFT_CHECK = "scoring_run", "drift"
SUMMARY_MAX = 1000
"""PagerDuty keeps 1024 characters of a summary."""


def alert_key(check: str, model_name: str, feature_set: FeatureSetRef | None) -> str:
    """``scoring:<model>@<name>@<version>`` or ``drift:...``, by check."""
    prefix = "scoring" if check == SCORING_CHECK else check
    return f"{prefix}:{model_name}@{feature_set or 'unresolved'}"


@dataclass(frozen=True)
class RunContext:
    """What an alert says about its run: the request, and the version and feature set once resolved."""

    request: ScoringRequested
    version: int | None
    feature_set: FeatureSetRef | None
    gateway_url: str | None = None

    def key(self, check: str) -> str:
        """The run's incident key for ``check``."""
        return alert_key(check, self.request.model_name, self.feature_set)

    def links(self) -> dict[str, str]:
        """The job and the model card (the model, before the version is known); none without a gateway URL."""
        if not self.gateway_url:
            return {}
        base = self.gateway_url.rstrip("/")
        model = quote(self.request.model_name, safe="")
        links = {"job": f"{base}/v1/jobs/{quote(self.request.job_id, safe='')}"}
        if self.version is None:
            links["model"] = f"{base}/v1/models/{model}"
        else:
            pair = f"?feature_set={quote(str(self.feature_set), safe='')}" if self.feature_set else ""
            links["model_card"] = f"{base}/v1/models/{model}/versions/{self.version}/card{pair}"
        return links

    def details(self) -> dict[str, Any]:
        """The job, model, version, feature set and day."""
        return {
            "job_id": self.request.job_id,
            "model": self.request.model_name,
            "version": self.version,
            "feature_set": str(self.feature_set) if self.feature_set else None,
            "ds": self.request.ds.isoformat(),
        }


def scoring_failed(run: RunContext, reason: str) -> AlertRaised:
    """The run failed with ``reason``."""
    request = run.request
    which = f"v{run.version}" if run.version is not None else "(version not resolved)"
    return AlertRaised(
        dedup_key=run.key(SCORING_CHECK),
        check=SCORING_CHECK,
        severity=Severity.ERROR,
        summary=_short(f"scoring {request.model_name} {which} for {request.ds} failed: {reason}"),
        source=SOURCE,
        model_name=request.model_name,
        feature_set_name=run.feature_set.name if run.feature_set else None,
        links=run.links(),
        details={**run.details(), "reason": reason},
    )


def scoring_succeeded(run: RunContext, rows: int) -> AlertResolved:
    """The run scored ``rows`` rows."""
    request = run.request
    summary = f"{request.model_name} v{run.version} scored {rows} rows for {request.ds}"
    return AlertResolved(
        dedup_key=run.key(SCORING_CHECK), check=SCORING_CHECK, source=SOURCE, summary=summary
    )


def drift_measured(
    run: RunContext, report: dict[str, Any], psi: dict[str, float]
) -> AlertRaised | AlertResolved:
    """Raised when an input or the score passed the threshold, else resolved.

    Args:
        run: the succeeded run.
        report: the drift report (``threshold``, ``features``, ``drifted``, ``score``, ``score_drifted``).
        psi: every input's PSI and the score's, for the details.
    """
    request, key = run.request, run.key(DRIFT_CHECK)
    threshold = float(report["threshold"])
    if not (report["drifted"] or report["score_drifted"]):
        summary = f"{request.model_name} v{run.version}: no drift above PSI {threshold} on {request.ds}"
        return AlertResolved(dedup_key=key, check=DRIFT_CHECK, source=SOURCE, summary=summary)
    moved = {str(name): float(report["features"][name]) for name in report["drifted"]}
    named = ", ".join(f"{name} {value:.3f}" for name, value in sorted(moved.items(), key=lambda i: -i[1]))
    if report["score_drifted"]:
        named += ("; " if named else "") + f"score {float(report['score']):.3f}"
    return AlertRaised(
        dedup_key=key,
        check=DRIFT_CHECK,
        severity=Severity.WARNING,
        summary=_short(
            f"drift on {request.model_name} v{run.version} ({run.feature_set}) for {request.ds}: "
            f"PSI above {threshold} on {named}"
        ),
        source=SOURCE,
        model_name=request.model_name,
        feature_set_name=run.feature_set.name if run.feature_set else None,
        links=run.links(),
        details={
            **run.details(),
            "threshold": threshold,
            "drifted_features": moved,
            "score_psi": report["score"],
            "psi": psi,
        },
    )


def _short(summary: str) -> str:
    return summary if len(summary) <= SUMMARY_MAX else summary[: SUMMARY_MAX - 1] + "…"
