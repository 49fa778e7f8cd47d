"""The FastAPI app: the same object behind API Gateway (Mangum) and `docflow serve` (uvicorn)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.types import Scope

from docflow import __version__
from docflow.api import errors, review_routes, routes
from docflow.api.config import ApiSettings, get_api_settings
from docflow.api.metrics import RequestMetricsMiddleware
from docflow.api.middleware import RequestContextMiddleware
from docflow.api.security import require_api_key
from docflow.api.worker import Submitter
from docflow.context import StepContext, get_context

DESCRIPTION = """Classify documents (scans, photos, PDFs) by type.

Upload with `POST /documents` (small files) or `POST /documents/upload-url` (large ones), then poll
`GET /documents/{document_id}` until `terminal` is true. `POST /predict/text` and `POST /upload-and-predict`
answer synchronously. Documents the model is not sure of wait for a person at `/review` (a web page) or
`GET /review/queue`. Every endpoint but `/health` needs the API key in the `x-api-key` header.
Errors are JSON: `{"error": <code>, "detail": <text>}`.
"""

# Multipart framing and form fields around the file itself.
_FORM_OVERHEAD = 64 * 1024


def create_app(
    context: Callable[[], StepContext] = get_context,
    api_settings: Callable[[], ApiSettings] = get_api_settings,
    submitter: Submitter | None = None,
) -> FastAPI:
    """Build the app. Settings and stores are resolved on first use, never at import (Lambda, moto)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start: Any = getattr(app.state.submitter, "start", None)
        if start is not None:
            start()
        yield
        stop: Any = getattr(app.state.submitter, "shutdown", None)
        if stop is not None:
            stop(api_settings().api_shutdown_grace)

    app = FastAPI(
        title="Docflow",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
        # operationId = the route function's name (upload_document, get_document, …): stable for generated clients.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.context = context
    app.state.api_settings = api_settings
    app.state.submitter = submitter
    random_secret = secrets.token_bytes(32)

    def upload_secret() -> bytes:
        # Local upload URLs outlive a restart when a key is configured; otherwise they die with the process.
        key = api_settings().api_key
        if key is None:
            return random_secret
        return hmac.new(key.get_secret_value().encode(), b"docflow upload url", hashlib.sha256).digest()

    app.state.upload_secret = upload_secret

    def body_limit(scope: Scope) -> int:
        if scope.get("method") == "PUT" and str(scope.get("path", "")).startswith("/uploads/"):
            return context().settings.max_bytes
        return api_settings().api_max_upload_bytes + _FORM_OVERHEAD

    errors.install(app)
    app.include_router(routes.public)
    app.include_router(review_routes.page)
    app.include_router(routes.protected, dependencies=[Depends(require_api_key)])
    app.include_router(review_routes.protected, dependencies=[Depends(require_api_key)])
    app.add_middleware(RequestContextMiddleware, body_limit=body_limit)
    # Outermost (added last): it times every answer, the body-limit 413s included.
    app.add_middleware(RequestMetricsMiddleware)
    return app
