"""The local stack's admin API key, kept in ``<home>/credentials.json`` (mode 0600)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CREDENTIALS_FILE = "credentials.json"


class CredentialsError(RuntimeError):
    """The credentials file exists but cannot be used."""


@dataclass(frozen=True)
class Credentials:
    """An API key and the file it lives in."""

    api_key: str
    path: Path
    created: bool = False


def new_api_key() -> str:
    """Return a fresh admin key in the gateway's format: ``pf_<12 hex key id>_<43 url-safe chars>``."""
    return f"pf_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def credentials_path(home: Path) -> Path:
    """Where the key file of the stack rooted at ``home`` lives."""
    return home / CREDENTIALS_FILE


def read_credentials(home: Path) -> Credentials | None:
    """Return the stored key, or None when there is no key file yet.

    Raises:
        CredentialsError: the file exists but is not a credentials file.
    """
    path = credentials_path(home)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        key = data["api_key"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CredentialsError(
            f"{path} is not a pfactory credentials file ({error}); delete it to make a new key"
        ) from error
    if not isinstance(key, str) or not key:
        raise CredentialsError(f"{path} holds no api_key; delete it to make a new key")
    return Credentials(api_key=key, path=path)


def load_or_create_credentials(home: Path) -> Credentials:
    """Return the stored admin key, generating and storing one (mode 0600) on first run."""
    existing = read_credentials(home)
    if existing is not None:
        return existing
    home.mkdir(parents=True, exist_ok=True)
    path = credentials_path(home)
    key = new_api_key()
    body = json.dumps(
        {"api_key": key, "role": "admin", "created_at": datetime.now(UTC).isoformat()}, indent=2
    )
    # O_EXCL: two `pfactory up` racing must not overwrite each other's key; mode set at creation.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body + "\n")
    return Credentials(api_key=key, path=path, created=True)
