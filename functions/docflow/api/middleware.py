"""Per-request plumbing, as one pure ASGI middleware: a request id (API Gateway's when there is one) on the
log and the response, the API Gateway stage as root_path (so /docs finds its schema), and a cap on body
size enforced before the body is read."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docflow.api.errors import ApiError
from docflow.api.schemas import ErrorResponse
from docflow.powertools import logger

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _aws_request_context(scope: Scope) -> dict[str, Any]:
    event = scope.get("aws.event") or {}
    context = event.get("requestContext") if isinstance(event, dict) else None
    return context if isinstance(context, dict) else {}


def request_id_for(scope: Scope) -> str:
    aws_id = _aws_request_context(scope).get("requestId")
    if isinstance(aws_id, str) and _SAFE_ID.match(aws_id):
        return aws_id
    given = _header(scope, REQUEST_ID_HEADER.encode())
    return given if given and _SAFE_ID.match(given) else uuid.uuid4().hex


def stage_root_path(scope: Scope) -> str:
    """'/prod' when API Gateway served the request under its stage name (not under a custom domain)."""
    context = _aws_request_context(scope)
    stage, full_path = context.get("stage"), context.get("path")
    if isinstance(stage, str) and isinstance(full_path, str) and full_path.startswith(f"/{stage}/"):
        return f"/{stage}"
    return ""


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, body_limit: Callable[[Scope], int]) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        if not scope.get("root_path"):
            scope["root_path"] = stage_root_path(scope)
        logger.thread_safe_append_keys(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            limit = self.body_limit(scope)
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._too_large(send_with_id, request_id, limit)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise ApiError(413, "payload_too_large", _too_large_detail(limit))
                return message

            await self.app(scope, limited_receive, send_with_id)
        finally:
            logger.thread_safe_remove_keys(["request_id"])

    @staticmethod
    async def _too_large(send: Send, request_id: str, limit: int) -> None:
        body = ErrorResponse(error="payload_too_large", detail=_too_large_detail(limit), request_id=request_id)
        payload = json.dumps(body.model_dump(exclude_none=True)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _too_large_detail(limit: int) -> str:
    return f"the request body is larger than {limit:,} bytes; upload large files with POST /documents/upload-url"
