"""How the CLI shows things: compiler-style config issues, job tables and job states."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

STATUS_STYLE = {
    "accepted": "cyan",
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
}
TERMINAL = frozenset({"succeeded", "failed"})


def issue_text(issue: Mapping[str, Any]) -> str:
    """One issue as ``file:line:col: path: message (expected …) — did you mean '…'?``.

    Mirrors ``ConfigIssue.__str__`` so local and gateway diagnostics read the same.
    """
    where = str(issue.get("file") or "<config>")
    if issue.get("line") is not None:
        where += f":{issue['line']}:{issue.get('column') or 1}"
    text = f"{where}: {issue.get('path') or '<root>'}: {issue.get('message', '')}"
    if issue.get("expected"):
        text += f" (expected {issue['expected']})"
    if issue.get("suggestion"):
        text += f" — did you mean '{issue['suggestion']}'?"
    return text


def print_issues(
    console: Console, issues: Iterable[Mapping[str, Any]], *, filename: str | None = None
) -> int:
    """Print each issue on its own line, location first; returns how many were printed."""
    count = 0
    for issue in issues:
        if filename and not issue.get("file"):
            issue = {**issue, "file": filename}
        text = issue_text(issue)
        where, _, rest = text.partition(": ")
        console.print(f"[bold red]{escape(where)}[/]: {escape(rest)}", highlight=False, soft_wrap=True)
        count += 1
    return count


def status_markup(status: str | None) -> str:
    """A job status, coloured."""
    value = status or "?"
    return f"[{STATUS_STYLE.get(value, 'white')}]{escape(value)}[/]"


def progress_text(progress: Mapping[str, Any] | None) -> str:
    """``3/10 steps — message`` (or '' without progress)."""
    if not progress:
        return ""
    done, total = progress.get("done"), progress.get("total")
    amount = f"{done}/{total}" if total is not None else f"{done}"
    text = f"{amount} {progress.get('unit') or ''}".strip()
    if progress.get("message"):
        text += f" — {progress['message']}"
    return text


def _short_time(value: object) -> str:
    """``2026-01-02T10:11:12.345Z`` → ``01-02 10:11:12`` (the full stamp is in ``jobs show``)."""
    text = str(value or "")
    match = re.match(r"\d{4}-(\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})", text)
    return f"{match.group(1)} {match.group(2)}" if match else text


def jobs_table(items: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """A table of jobs: id, kind, name, status, stage, updated, reason."""
    table = Table(title=title, show_lines=False)
    table.add_column("job id", no_wrap=True, min_width=36)
    for column in ("kind", "name", "status", "stage", "updated", "reason / progress"):
        table.add_column(column, overflow="fold")
    for job in items:
        detail = job.get("reason") or progress_text(job.get("progress"))
        table.add_row(
            escape(str(job.get("job_id", ""))),
            escape(str(job.get("kind", ""))),
            escape(str(job.get("name", ""))),
            status_markup(job.get("status")),
            escape(str(job.get("stage") or "")),
            escape(_short_time(job.get("updated_at"))),
            escape(str(detail or "")),
        )
    return table


def print_jobs(console: Console, items: Sequence[Mapping[str, Any]]) -> None:
    """Jobs as a table on a wide console, else one line per job (job id first, easy to copy)."""
    if console.width >= 130:
        console.print(jobs_table(items))
        return
    for job in items:
        detail = job.get("reason") or progress_text(job.get("progress"))
        stage = f"/{job['stage']}" if job.get("stage") else ""
        parts = [
            escape(str(job.get("job_id", ""))),
            escape(str(job.get("kind", ""))),
            f"[bold]{escape(str(job.get('name', '')))}[/]",
            status_markup(job.get("status")) + escape(stage),
            escape(_short_time(job.get("updated_at"))),
        ]
        if detail:
            parts.append(f"— {escape(str(detail))}")
        console.print("  ".join(parts), soft_wrap=True)


def job_detail_table(job: Mapping[str, Any]) -> Table:
    """One job, field by field."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in job.items():
        if key == "status":
            shown = status_markup(str(value))
        elif key == "progress":
            shown = escape(progress_text(value)) if value else "-"
        elif isinstance(value, dict | list):
            shown = escape(str(value)) if value else "-"
        else:
            shown = escape(str(value)) if value not in (None, "") else "-"
        table.add_row(escape(str(key)), shown)
    return table


# ------------------------------------------------------------------------------------ registry

VERSION_STATUS_STYLE = {
    "candidate": "cyan",
    "approved": "blue",
    "live": "green",
    "archived": "dim",
    "rejected": "red",
}


def version_status_markup(status: str | None) -> str:
    """A version status, coloured."""
    value = status or "?"
    return f"[{VERSION_STATUS_STYLE.get(value, 'white')}]{escape(value)}[/]"


def _number(value: object) -> str:
    return "-" if value is None else str(value)


def models_table(models: Iterable[Mapping[str, Any]]) -> Table:
    """One row per pair: model, feature set, newest and live version."""
    table = Table(title="registered models", title_justify="left")
    for column in ("model", "feature set", "latest", "live"):
        table.add_column(column, no_wrap=column != "model", overflow="fold")
    for model in models:
        for pair in model.get("pairs", []):
            table.add_row(
                f"[bold]{escape(str(model.get('name', '')))}[/]",
                escape(str(pair.get("feature_set", ""))),
                _number(pair.get("latest_version")),
                f"[green]{_number(pair.get('live_version'))}[/]" if pair.get("live_version") else "-",
            )
    return table


def _metric_text(metrics: Mapping[str, Any]) -> str:
    parts = []
    for name, metric in sorted(metrics.items()):
        value = metric.get("value") if isinstance(metric, Mapping) else metric
        text = f"{name} {value:.4g}" if isinstance(value, int | float) else f"{name} {value}"
        if (
            isinstance(metric, Mapping)
            and metric.get("ci_low") is not None
            and metric.get("ci_high") is not None
        ):
            text += f" [{metric['ci_low']:.3g}, {metric['ci_high']:.3g}]"
        parts.append(text)
    return ", ".join(parts)


def versions_table(versions: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """A pair's versions: number, status, aliases, failed gates, metrics, registered."""
    table = Table(title=title, title_justify="left")
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("aliases", "failed gates", "metrics", "registered"):
        table.add_column(column, overflow="fold")
    for version in versions:
        failed = version.get("failed_gates") or []
        table.add_row(
            str(version.get("version", "")),
            version_status_markup(version.get("status")),
            escape(", ".join(version.get("aliases") or [])) or "-",
            f"[red]{escape(', '.join(failed))}[/]" if failed else "-",
            escape(_metric_text(version.get("metrics") or {})) or "-",
            escape(f"{_short_time(version.get('created_at'))} by {version.get('created_by', '?')}"),
        )
    return table


def _window(lineage: Mapping[str, Any]) -> str:
    start, end = lineage.get("start_ds"), lineage.get("end_ds")
    return f"{start or '?'} to {end or '?'}" if start or end else "not recorded"


def version_detail(console: Console, version: Mapping[str, Any]) -> None:
    """One version: identity, artifact, provenance, evaluation, then its audit trail."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    artifact = version.get("artifact") or {}
    lineage = version.get("lineage") or {}
    failed = version.get("failed_gates") or []
    rows = [
        ("model", escape(str(version.get("model_name", "")))),
        ("feature set", escape(str(version.get("feature_set", "")))),
        ("version", str(version.get("version", ""))),
        ("status", version_status_markup(version.get("status"))),
        ("aliases", escape(", ".join(version.get("aliases") or [])) or "-"),
        (
            "gates",
            escape(
                ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in (version.get("gates") or {}).items())
            )
            or "-",
        ),
        ("failed gates", f"[red]{escape(', '.join(failed))}[/]" if failed else "-"),
        ("metrics", escape(_metric_text(version.get("metrics") or {})) or "-"),
        ("framework", escape(str(version.get("framework", "")))),
        ("artifact", escape(f"{artifact.get('uri', '')} ({artifact.get('size_bytes', '?')} bytes)")),
        ("sha256", escape(str(artifact.get("sha256", "")))),
        ("trained on", escape(_window(lineage))),
        ("rows", escape(", ".join(f"{k}: {v}" for k, v in (lineage.get("row_counts") or {}).items())) or "-"),
        ("job", escape(str(version.get("allocation_key", "")))),
        ("registered", escape(f"{version.get('created_at', '')} by {version.get('created_by', '')}")),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    audit = Table(title="audit trail", title_justify="left")
    for column in ("when", "who", "action", "change", "reason"):
        audit.add_column(column, overflow="fold")
    for entry in version.get("audit") or []:
        change = " → ".join(str(part) for part in (entry.get("from"), entry.get("to")) if part)
        audit.add_row(
            escape(_short_time(entry.get("at"))),
            escape(str(entry.get("actor", ""))),
            escape(str(entry.get("action", ""))),
            escape(change) or "-",
            escape(str(entry.get("reason") or "")),
        )
    console.print(audit)


class JobBars:
    """Progress bars for jobs a command follows, drawn only on a terminal (a log or a pipe gets the lines).

    Use as a context manager and call :meth:`update` with each job's latest view; the followers keep
    printing a line whenever a job's state changes, which rich shows above the bars.
    """

    def __init__(self, console: Console, unit: str) -> None:
        self.unit = unit
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            if console.is_terminal
            else None
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> JobBars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, key: str, name: str, view: Mapping[str, Any]) -> None:
        """Move ``key``'s bar to the view's ``progress`` (``done`` of ``total``)."""
        if self._progress is None:
            return
        progress = view.get("progress") or {}
        total = progress.get("total")
        done = progress.get("done") or 0
        if key not in self._tasks:
            self._tasks[key] = self._progress.add_task(name, total=total if isinstance(total, int) else None)
        self._progress.update(
            self._tasks[key],
            completed=done if isinstance(done, int) else 0,
            total=total if isinstance(total, int) and total > 0 else None,
            description=f"{name} ({view.get('status')})",
        )
