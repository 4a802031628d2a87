"""The demo's training steps: follow each model's training job, then say what it registered.

A training job reports its runs as progress (``done``/``total`` runs, one per sweep trial) while
the trainer works, then ``registering`` and ``registered`` once the registrar has stored the
version; its result keeps every trial (``result.training``) and names the version. The summary
reads that result and the version from the registry API: the champion's parameters, the primary
metric with its confidence interval, the fairness verdict, and where to look next.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from rich.console import Console
from rich.markup import escape

from pfactory.cli.client import GatewayClient, GatewayError
from pfactory.cli.render import TERMINAL, JobBars, progress_text, status_markup
from pfactory.contracts.configs.metrics import LOWER_IS_BETTER

GAP_RATES = {"demographic_parity_difference": "selection_rate", "equal_opportunity_difference": "tpr"}
"""The per-group rate each fairness difference is the largest gap of."""
TRAINING_TIMEOUT_S = 1800.0
"""How long the demo follows its training jobs (the example's own limit per run is 1,800 s)."""


def follow_training(
    console: Console,
    client: GatewayClient,
    jobs: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float = TRAINING_TIMEOUT_S,
    interval_s: float = 0.5,
) -> list[dict[str, Any]]:
    """Follow training jobs until each ends, printing a line whenever one's progress changes.

    Args:
        console: where to print.
        client: the gateway.
        jobs: the 202 answers of the submitted model configs (``job_id``, ``name``).
        timeout_s: give up after this long; the jobs still running are returned as they are.
        interval_s: seconds between polls.

    Returns:
        Each job's last view from ``GET /v1/jobs/{id}``, in the order given.
    """
    views: dict[str, dict[str, Any]] = {}
    shown: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    pending = [str(job["job_id"]) for job in jobs]
    names = {str(job["job_id"]): str(job.get("name") or job["job_id"]) for job in jobs}
    with JobBars(console, "runs") as bars:
        while pending:
            for job_id in list(pending):
                try:
                    view = client.get_job(job_id)
                except GatewayError as error:
                    console.print(f"[red]error[/] following job {job_id}: {escape(str(error))}")
                    pending.remove(job_id)
                    continue
                views[job_id] = view
                bars.update(job_id, names[job_id], view)
                line = " ".join(
                    part
                    for part in (
                        status_markup(view.get("status")),
                        escape(str(view.get("stage") or "")),
                        escape(progress_text(view.get("progress"))),
                    )
                    if part
                )
                if line != shown.get(job_id):
                    console.print(f"[dim]•[/] {escape(names[job_id])}: {line}")
                    shown[job_id] = line
                if view.get("status") in TERMINAL:
                    pending.remove(job_id)
            if pending and time.monotonic() > deadline:
                console.print(
                    f"[red]timed out[/] after {timeout_s:.0f} s waiting for job(s) {', '.join(pending)}"
                )
                break
            if pending:
                time.sleep(interval_s)

    return [views[str(job["job_id"])] for job in jobs if str(job["job_id"]) in views]


def summarise_training(
    console: Console, client: GatewayClient, gateway_url: str, job: Mapping[str, Any], *, home: Path
) -> bool:
    """Print what one finished training job registered, or why it failed.

    Args:
        console: where to print.
        client: the gateway.
        gateway_url: the gateway's base URL, for the links printed.
        job: the job's last view.
        home: the stack's folder (its logs are under ``logs/``).

    Returns:
        True when the job registered a version.
    """
    job_id, name = str(job["job_id"]), str(job.get("name") or "")
    job_url = f"{gateway_url}/v1/jobs/{job_id}"
    result = job.get("result") or {}
    if job.get("status") != "succeeded" or not isinstance(result.get("version"), int):
        reason = (
            job.get("reason") or f"the job is still {job.get('status')} ({job.get('stage') or 'no stage'})"
        )
        console.print(f"[red]not registered[/] {escape(name)}: {escape(str(reason))}")
        console.print(f"  job     {job_url}")
        console.print(f"  logs    {home / 'logs' / 'trainer.log'}, {home / 'logs' / 'registrar.log'}")
        return False
    version_number: int = result["version"]
    try:
        version = client.get_version(name, version_number, feature_set=str(result.get("feature_set") or ""))
    except GatewayError as error:
        console.print(f"[red]error[/] reading {escape(name)} v{version_number}: {escape(str(error))}")
        return False
    spec = (version.get("config") or {}).get("spec") or {}
    console.print(
        f"[bold]{escape(name)}[/] v{version_number} on {escape(str(result.get('feature_set')))}: "
        f"registered as [bold]{escape(str(version.get('status')))}[/]"
    )
    _row(console, "champion", _champion(result.get("training") or {}))
    _row(console, "metric", _primary_metric(spec, version))
    fairness = _fairness_lines(spec, version)
    for index, line in enumerate(fairness or ["no fairness constraints configured"]):
        _row(console, "fairness" if index == 0 else "", line)
    _row(console, "verdict", _verdict(name, version_number, version))
    card_url = f"{gateway_url}{version.get('card_url') or ''}"
    _row(console, "card", escape(card_url + ("&" if "?" in card_url else "?") + "format=html"))
    if result.get("card_markdown_uri"):
        _row(console, "", escape(_local_path(str(result["card_markdown_uri"]))))
    _row(console, "job", escape(f"{job_url}   (result.training: every trial's parameters and metrics)"))
    _row(console, "next", escape(f"pfactory models card {name} --version {version_number}"))
    return True


def _row(console: Console, label: str, text: str) -> None:
    console.print(f"  {label:<9} {text}")


def _champion(training: Mapping[str, Any]) -> str:
    trials = [t for t in training.get("trials") or [] if isinstance(t, Mapping)]
    selected = [str(s) for s in training.get("selected") or []]
    selection = training.get("selection") or {}
    by = f" by {selection['metric']}" if selection.get("metric") else ""
    if not selected:
        return "not recorded"
    if len(selected) > 1:
        how = selection.get("ensemble") or "ensemble"
        return escape(f"top-{len(selected)} {how} of {', '.join(selected)} ({len(trials)} trials{by})")
    chosen = next((t for t in trials if t.get("run_id") == selected[0]), {})
    params = ", ".join(f"{key}={value}" for key, value in (chosen.get("params") or {}).items())
    return escape(f"{selected[0]}, best of {len(trials)} trials{by}: {params or 'the config as written'}")


def _primary_metric(spec: Mapping[str, Any], version: Mapping[str, Any]) -> str:
    metrics_spec = spec.get("metrics") or {}
    primary = str(metrics_spec.get("primary") or "")
    metric = (version.get("metrics") or {}).get(primary)
    if not isinstance(metric, Mapping) or metric.get("value") is None:
        return f"{escape(primary)} not recorded"
    text = f"{primary} {metric['value']:.3f}"
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        text += f" (95% CI {metric['ci_low']:.3f} to {metric['ci_high']:.3f})"
    threshold = (metrics_spec.get("thresholds") or {}).get(primary)
    passed = (version.get("gates") or {}).get(f"metric:{primary}")
    if threshold is not None:
        text += f", threshold {'≤' if primary in LOWER_IS_BETTER else '≥'} {threshold}"
    if passed is not None:
        return escape(text + ": ") + ("[green]pass[/]" if passed else "[red]FAIL[/]")
    return escape(text)


def _fairness_lines(spec: Mapping[str, Any], version: Mapping[str, Any]) -> list[str]:
    """One line per gated fairness measure: value against its limit, and the groups furthest apart."""
    constraints = (spec.get("fairness") or {}).get("constraints") or {}
    report = version.get("fairness") or {}
    gates = version.get("gates") or {}
    lines = []
    for attribute, section in report.items():
        if not isinstance(section, Mapping):
            continue
        for measure, limit in constraints.items():
            value = section.get(measure)
            passed = gates.get(f"fairness:{attribute}:{measure}")
            shown = f"{value:.3f}" if isinstance(value, int | float) else "not computable"
            text = escape(f"{attribute} {measure} {shown} (largest allowed {limit}): ")
            text += "[green]pass[/]" if passed else "[red]FAIL[/]"
            if not passed and isinstance(value, int | float):
                text += escape(_gap_groups(section, measure))
            elif not passed:
                text += " (the card's fairness notes say why)"
            lines.append(text)
    return lines


def _gap_groups(section: Mapping[str, Any], measure: str) -> str:
    """`` — selection_rate 57.6% for 18-24 (210 rows) vs 1.7% for 40-59 (690 rows)``: the groups furthest apart."""
    rate = GAP_RATES.get(measure)
    groups = section.get("groups") or {}
    rated = {
        str(name): row
        for name, row in groups.items()
        if rate and isinstance(row, Mapping) and isinstance(row.get(rate), int | float)
    }
    if not rate or len(rated) < 2:
        return ""
    low = min(rated, key=lambda name: rated[name][rate])
    high = max(rated, key=lambda name: rated[name][rate])

    def shown(name: str) -> str:
        count = rated[name].get("count")
        return f"{rated[name][rate]:.1%} for {name}" + (
            f" ({count:,} rows)" if isinstance(count, int) else ""
        )

    return f" — {rate} {shown(high)} vs {shown(low)}"


def _verdict(name: str, version_number: int, version: Mapping[str, Any]) -> str:
    failed = [str(gate) for gate in version.get("failed_gates") or []]
    if not failed:
        return "[green]every gate passed[/]: it can be approved with " + escape(
            f"pfactory models promote {name} --version {version_number} --to approved"
        )
    kinds = sorted({gate.split(":", 1)[0] for gate in failed})
    return (
        f"[red]{escape(' and '.join(kinds))} gate(s) failed[/] ({len(failed)}): it stays a candidate and is "
        "not approved or deployed; approving it anyway takes an admin override with a reason, recorded in "
        "the audit trail"
    )


def _local_path(uri: str) -> str:
    """A ``file://`` URI as a path relative to the working folder when inside it; other URIs unchanged."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return uri
    path = Path(unquote(parsed.path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
