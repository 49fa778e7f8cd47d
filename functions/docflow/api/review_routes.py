"""The review queue's endpoints and its page (/review): HTML, CSS and JavaScript shipped in this package
(api/static/), no CDN. The page and its two files hold no data and need no key; everything they show comes
from the endpoints below, which need the API key like the rest of the API (the page sends it as x-api-key
from the tab's session storage, never in a URL).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from docflow.api import review
from docflow.api.errors import ApiError, responses
from docflow.api.routes import Ctx, DocId, api_key_id
from docflow.api.schemas import DecisionRequest, DecisionResponse, DocumentText, ReviewQueuePage
from docflow.values import ReviewCode

# The page loads only its own script and stylesheet, talks only to this API, shows images only from this API
# (as blob: URLs made from responses fetched with the key), and cannot be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_ASSETS = {
    "review.js": "text/javascript; charset=utf-8",
    "review.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

page = APIRouter()  # keyless: the page and its files
protected = APIRouter()


@cache
def _asset(name: str) -> bytes:
    return resources.files("docflow.api").joinpath("static", name).read_bytes()


@page.get("/review", include_in_schema=False)
def review_page() -> Response:
    """The review page: a static file whose every link is relative (API Gateway's stage, LocalStack's path)."""
    return Response(_asset("review.html"), media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)


@page.get("/review/static/{name}", include_in_schema=False)
def review_asset(name: Annotated[str, Path(max_length=32)]) -> Response:
    if name not in _ASSETS:
        raise ApiError(404, "not_found", "no such file")
    return Response(_asset(name), media_type=_ASSETS[name], headers=_SECURITY_HEADERS)


@protected.get("/review/queue", response_model=ReviewQueuePage, tags=["review"], responses=responses())
def review_queue(
    ctx: Ctx,
    predicted_class: Annotated[str | None, Query(max_length=100, description="only those the model put here")] = None,
    reason: Annotated[ReviewCode | None, Query(description="only those sent to review for this reason")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=4096, description="next_cursor of the previous page")] = None,
) -> ReviewQueuePage:
    """The documents waiting for a person (NEEDS_REVIEW), the longest waiting first, and how many there are."""
    return review.queue(ctx, predicted_class or None, reason, limit, cursor)


@protected.get(
    "/documents/{document_id}/text", response_model=DocumentText, tags=["documents"], responses=responses(404)
)
def document_text(document_id: DocId, ctx: Ctx) -> DocumentText:
    """The text extracted from each page (the PDF's text layer or OCR), as the classifier read it."""
    return review.document_text(ctx, document_id)


@protected.get(
    "/documents/{document_id}/pages/{page_number}/preview",
    tags=["documents"],
    responses={
        **responses(404),
        200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "the page as an image"},
    },
    response_class=Response,
)
def page_preview(document_id: DocId, page_number: Annotated[int, Path(ge=1, le=100_000)], ctx: Ctx) -> Response:
    """One page as an image at most 1400 pixels on a side (PNG for grey scans, JPEG for colour)."""
    data, media_type = review.page_preview(ctx, document_id, page_number)
    # Private: a shared cache must never keep what only key holders may see.
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, no-store"})


@protected.post(
    "/documents/{document_id}/decision",
    response_model=DecisionResponse,
    tags=["review"],
    responses=responses(404, 409),
)
def decide(document_id: DocId, body: DecisionRequest, ctx: Ctx, request: Request) -> DecisionResponse:
    """A person's decision: the document's class (or out_of_scope: none of the model's classes). A NEEDS_REVIEW
    document leaves the queue (REVIEWED); the decision is recorded beside the model's suggestion, with who
    and when, and counts as a label for retraining."""
    return review.decide(ctx, document_id, body.label, body.reviewer, api_key_id(request), body.expect_status)


@protected.delete(
    "/documents/{document_id}/decision",
    response_model=DecisionResponse,
    tags=["review"],
    responses=responses(404, 409),
)
def undo_decision(
    document_id: DocId,
    ctx: Ctx,
    decision_id: Annotated[
        str | None, Query(max_length=100, description="only if this is still the latest decision (else 409)")
    ] = None,
) -> DecisionResponse:
    """Undo the document's latest decision: its label and status return to what they were (a reviewed document
    goes back to its place in the queue). The decision stays in the history, marked undone."""
    return review.undo_last(ctx, document_id, decision_id)
