"""The API key check: x-api-key against DOCFLOW_API_KEY, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from docflow.api.errors import ApiError

API_KEY_HEADER = "x-api-key"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="The API key (DOCFLOW_API_KEY locally; an API Gateway key with a usage plan on AWS).",
)


def require_api_key(request: Request, provided: str | None = Security(api_key_header)) -> None:
    """401 without a key, 403 with a wrong one. No key configured: the app does not check (on AWS API
    Gateway checks its own keys; `docflow serve` then listens on loopback only)."""
    expected = request.app.state.api_settings().api_key
    if expected is None:
        return
    if not provided:
        raise ApiError(
            401,
            "unauthorized",
            f"missing API key: send it in the {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    if not hmac.compare_digest(provided.encode(), expected.get_secret_value().encode()):
        raise ApiError(403, "forbidden", "invalid API key")
