"""What the CLI does without a platform: credentials, and advice when the gateway is not there."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from typer.testing import CliRunner

from pfactory.bus.embedded import free_port
from pfactory.cli.credentials import load_or_create_credentials
from pfactory.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GATEWAY_KEY_FORMAT = re.compile(r"^pf_[0-9a-f]{12}_[A-Za-z0-9_-]{32,}$")


def test_first_run_creates_a_private_key_file_and_later_runs_reuse_it(tmp_path: Path) -> None:
    home = tmp_path / ".pfactory"
    first = load_or_create_credentials(home)
    again = load_or_create_credentials(home)
    assert first.created and not again.created
    assert first.api_key == again.api_key
    assert GATEWAY_KEY_FORMAT.match(first.api_key)
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600


def test_submit_to_a_gateway_that_is_not_there_gives_advice_and_exit_3(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app,
        [
            "submit",
            str(EXAMPLES / "credit_model.yaml"),
            "--url",
            url,
            "--api-key",
            "k",
            "--home",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 3, result.output
    assert "cannot reach the gateway" in result.output and "make up" in result.output


def test_jobs_list_without_a_gateway_exits_3(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["jobs", "list", "--url", url, "--home", str(tmp_path)])
    assert result.exit_code == 3
    assert "is the stack up" in result.output.lower()
