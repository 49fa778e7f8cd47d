"""One JSON error body (ErrorResponse) for every refusal, and the mapping from failures to status codes.

A 4xx says precisely what was wrong with the request; a 5xx is a bug or an outage, logged with its
traceback and answered without internals (the request id ties the two together).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from docflow.api.redact import redact_upload_path
from docflow.api.schemas import ErrorResponse, FieldError
from docflow.errors import TransientError
from docflow.powertools import logger

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
    504: "timeout",
}


class ApiError(StarletteHTTPException):
    """A refusal with a machine code. A subclass of HTTPException so that FastAPI passes it through from
    anywhere, body parsing included (the size-limited receive raises it)."""

    def __init__(self, status_code: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code


def error_body(request: Request | None, status_code: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    return ErrorResponse(error=code, detail=detail, request_id=request_id, **extra).model_dump(exclude_none=True)


def error_response(
    request: Request | None, status_code: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(request, status_code, code, detail), status_code=status_code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or _CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(request, exc.status_code, code, detail, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The offending input is not echoed back: it may be large, or a secret sent in the wrong field.
    errors = [
        FieldError(
            loc=[str(p) if not isinstance(p, int) else p for p in e.get("loc", ())], msg=e["msg"], type=e["type"]
        )
        for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors[:5]) or "invalid request"
    body = error_body(request, 422, "invalid_request", summary, errors=errors)
    return JSONResponse(body, status_code=422)


async def _transient_error(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("store unavailable", extra={"error": type(exc).__name__})
    return error_response(
        request, 503, "unavailable", "a store is briefly unavailable; retry shortly", headers={"Retry-After": "5"}
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # An upload URL's path is its credential: it is never logged.
    path = redact_upload_path(request.url.path)
    logger.exception("unhandled error", extra={"path": path, "method": request.method})
    return error_response(request, 500, "internal_error", "unexpected server error; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(TransientError, _transient_error)
    app.add_exception_handler(Exception, _unexpected_error)


# Documented on every operation, so clients (and schemathesis) know the error body's shape.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed body (not JSON, broken multipart)"},
    401: {"model": ErrorResponse, "description": "missing API key"},
    403: {"model": ErrorResponse, "description": "invalid API key"},
    413: {"model": ErrorResponse, "description": "body larger than this endpoint takes"},
    422: {"model": ErrorResponse, "description": "invalid request"},
    503: {"model": ErrorResponse, "description": "a store or the model is unavailable"},
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "malformed request",
        413: "payload too large",
        404: "unknown document",
        409: "the document is not in a state that allows this",
        415: "unsupported file type",
        504: "time budget exceeded",
    }
    return {**COMMON_RESPONSES, **{c: {"model": ErrorResponse, "description": descriptions[c]} for c in codes}}
