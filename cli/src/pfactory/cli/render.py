"""How the CLI shows things: compiler-style config issues, job tables and job states."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
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
