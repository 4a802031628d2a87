"""HTTP errors with one body shape: ``{"detail": <message>, "code": <machine code>, ...extra}``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error answer; raised anywhere in a request, rendered by :func:`api_error_handler`."""

    def __init__(
        self, status_code: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra


async def api_error_handler(request: Request, error: Exception) -> JSONResponse:
    """Render an :class:`ApiError`."""
    assert isinstance(error, ApiError)
    return JSONResponse(
        {"detail": error.detail, "code": error.code, **error.extra},
        status_code=error.status_code,
        headers=error.headers,
    )
