"""What every command shares: exit codes, the gateway options, consoles, failing with advice."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from pfactory.cli.client import GatewayClient, GatewayError, resolve_api_key, resolve_gateway_url

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PLATFORM, EXIT_TIMEOUT = 0, 1, 2, 3, 4

HomeOption = Annotated[
    Path,
    typer.Option(
        "--home",
        envvar="PF_HOME",
        help="The local stack's folder (credentials, logs, data).",
        show_default=True,
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Gateway URL [default: $PF_GATEWAY_URL, the running stack's, or :8080]."),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--api-key", help="API key [default: $PF_API_KEY, else <home>/credentials.json]."),
]


def console() -> Console:
    """Standard output; soft_wrap: a diagnostic or a path is never broken over lines."""
    return Console(highlight=False, soft_wrap=True)


def err_console() -> Console:
    """Standard error."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on standard error and exit with ``code``."""
    err_console().print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def client(url: str | None, api_key: str | None, home: Path) -> GatewayClient:
    """A gateway client from the options, the environment or the local stack (exit 3 with advice if not)."""
    try:
        return GatewayClient(resolve_gateway_url(url, home), resolve_api_key(api_key, home))
    except GatewayError as error:
        fail(str(error), error.exit_code)
