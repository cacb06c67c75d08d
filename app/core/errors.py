"""`APIError`: an error with a status and a code, raised anywhere below a view (services too)."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error with a documented code (docs/api.md); raise it anywhere below a view: the client gets the envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}
