"""The endpoints: parse the request into models, call one function of the resource's module (serving, documents,
uploads, sync_predict, review), answer a model."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile

from docflow.api import documents, review, serving, sync_predict, uploads
from docflow.api.config import ApiSettings
from docflow.api.errors import ApiError, responses
from docflow.api.schemas import (
    DOCUMENT_ID_PATTERN,
    DocumentAccepted,
    DocumentPage,
    DocumentPredictionResponse,
    DocumentResponse,
    ErrorResponse,
    HealthResponse,
    LabelRequest,
    ModelInfo,
    PredictionHistory,
    PredictionResponse,
    PredictTextRequest,
    UploadPredictionResponse,
    UploadUrlRequest,
    UploadUrlResponse,
)
from docflow.api.uploads import UploadGrant, verify_grant
from docflow.api.worker import LocalWorkers, S3Trigger, Submitter
from docflow.context import StepContext
from docflow.values import Status

OCR_LANGUAGE_PATTERN = r"^[A-Za-z0-9_]+([+,][A-Za-z0-9_]+)*$"


# -- dependencies: what every route gets from the app (never from the environment directly) ----------------


def api_key_id(request: Request) -> str | None:
    """The id (never the value) of the API Gateway key the request came with; None off AWS."""
    event = request.scope.get("aws.event")
    context = event.get("requestContext") if isinstance(event, dict) else None
    identity = context.get("identity") if isinstance(context, dict) else None
    key_id = identity.get("apiKeyId") if isinstance(identity, dict) else None
    return key_id if isinstance(key_id, str) and key_id else None


def context(request: Request) -> StepContext:
    ctx: StepContext = request.app.state.context()
    return ctx


def api_settings(request: Request) -> ApiSettings:
    api: ApiSettings = request.app.state.api_settings()
    return api


def submitter(request: Request, ctx: Annotated[StepContext, Depends(context)]) -> Submitter:
    if ctx.settings.backend == "aws":
        return S3Trigger()
    state = request.app.state
    if state.submitter is None:
        # An app built without workers (tests, a bare uvicorn): one in-process worker thread.
        state.submitter = LocalWorkers(ctx.settings, workers=0, max_queue=api_settings(request).api_max_queue)
    result: Submitter = state.submitter
    return result


Ctx = Annotated[StepContext, Depends(context)]
Api = Annotated[ApiSettings, Depends(api_settings)]
DocId = Annotated[str, Path(pattern=DOCUMENT_ID_PATTERN, description="SHA-256 of the content (lowercase hex)")]
UploadedFile = Annotated[UploadFile, File(description="the document: PDF, PNG, JPEG, TIFF, WebP or BMP")]


def _read_upload(file: UploadFile, api: ApiSettings) -> bytes:
    if file.size is not None and file.size > api.api_max_upload_bytes:
        raise ApiError(
            413,
            "payload_too_large",
            f"the file is {file.size:,} bytes; this endpoint takes at most {api.api_max_upload_bytes:,} bytes: "
            f"{uploads.UPLOAD_URL_HINT}",
        )
    return file.file.read(api.api_max_upload_bytes + 1)


def _claim_upload_url(spool: FilePath, grant: UploadGrant) -> FilePath:
    """Mark the URL's upload as taken (O_EXCL, so of two PUTs at once only one wins) or refuse with 409: a
    second PUT would overwrite the file the first upload's job reads, under the same upload_id. The marker's
    mtime is the grant's expiry; markers of expired grants, which no longer verify, are swept here."""
    now = time.time()
    for old in spool.glob("*.used"):
        try:
            if old.stat().st_mtime < now:
                old.unlink(missing_ok=True)
        except OSError:
            continue
    marker = spool / f"{grant.key.split('/')[1]}.used"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise ApiError(409, "upload_url_used", "this upload URL has already been used; ask for a new one") from None
    os.utime(marker, (grant.expires, grant.expires))
    return marker


public = APIRouter()
protected = APIRouter()


@public.get(
    "/health",
    response_model=HealthResponse,
    tags=["service"],
    responses={503: {"model": HealthResponse, "description": "a store or the model is not available"}},
)
def health(ctx: Ctx, response: Response) -> HealthResponse:
    """Liveness: the model version loaded and whether the stores answer. No API key needed."""
    result = serving.health(ctx)
    if result.status != "ok":
        response.status_code = 503
    return result


@protected.post(
    "/documents",
    status_code=202,
    response_model=DocumentAccepted,
    tags=["documents"],
    responses=responses(413, 415),
)
def upload_document(
    file: UploadedFile,
    ctx: Ctx,
    api: Api,
    response: Response,
    submit: Annotated[Submitter, Depends(submitter)],
) -> DocumentAccepted:
    """Upload one small document (multipart field `file`); the pipeline runs after the 202. Poll
    `status_url` until `terminal` is true. Larger files: POST /documents/upload-url."""
    accepted = uploads.accept_upload(ctx, api, submit, file.filename, _read_upload(file, api))
    response.headers["Location"] = accepted.status_url
    return accepted


@protected.post("/documents/upload-url", response_model=UploadUrlResponse, tags=["documents"], responses=responses())
def create_upload_url(body: UploadUrlRequest, ctx: Ctx, api: Api, request: Request) -> UploadUrlResponse:
    """A URL to PUT a large file to (S3 presigned on AWS). The object lands under incoming/ and is processed
    like any upload; its document_id is the file's SHA-256."""
    return uploads.upload_url(ctx, api, body, str(request.base_url), request.app.state.upload_secret())


@public.put(
    "/uploads/{token}",
    status_code=202,
    response_model=DocumentAccepted,
    tags=["documents"],
    responses={
        **responses(400, 404, 413),
        409: {"model": ErrorResponse, "description": "this upload URL has already been used"},
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def put_upload(
    token: Annotated[str, Path(max_length=2048)],
    request: Request,
    response: Response,
    ctx: Ctx,
    submit: Annotated[Submitter, Depends(submitter)],
) -> DocumentAccepted:
    """The target of a local upload URL (`docflow serve`; on AWS the URL is S3's). The signed token is the
    credential, as with S3, so no API key."""
    if ctx.settings.backend == "aws":
        raise ApiError(404, "not_found", "upload URLs on AWS point to S3")
    grant = verify_grant(token, request.app.state.upload_secret())
    if grant is None:
        raise ApiError(403, "forbidden", "this upload URL is invalid or has expired; ask for a new one")
    spool = ctx.settings.home / "api" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=spool, prefix=".upload-")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():  # the middleware stops it at DOCFLOW_MAX_BYTES
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size == 0:
            raise ApiError(422, "empty_file", "the uploaded file is empty")
        # Claimed only for the upload that is accepted: after a refusal (a checksum mismatch, a full queue)
        # the same URL can be used again.
        claim = _claim_upload_url(spool, grant)
        try:
            accepted = uploads.accept_granted_upload(ctx, submit, grant, FilePath(tmp), digest.hexdigest(), size)
        except BaseException:
            claim.unlink(missing_ok=True)
            raise
    finally:
        FilePath(tmp).unlink(missing_ok=True)
    response.headers["Location"] = accepted.status_url
    return accepted


@protected.get("/documents", response_model=DocumentPage, tags=["documents"], responses=responses())
def list_documents(
    ctx: Ctx,
    status: Annotated[Status | None, Query(description="only documents with this status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=4096, description="next_cursor of the previous page")] = None,
) -> DocumentPage:
    """Documents, most recently updated first (all of them, or those with one status), one page at a time.
    A document updated while you page (labelled, re-predicted, finished) moves to the front: page again from
    the start to see it. Statuses RECEIVED and DUPLICATE belong to uploads, not documents (422)."""
    return documents.list_documents(ctx, status, limit, cursor)


@protected.get(
    "/documents/{document_id}", response_model=DocumentResponse, tags=["documents"], responses=responses(404)
)
def get_document(document_id: DocId, ctx: Ctx) -> DocumentResponse:
    """Status, reason, prediction, pages, text source, timings, and every upload of this content."""
    return documents.get_document(ctx, document_id)


@protected.get(
    "/documents/{document_id}/predictions",
    response_model=PredictionHistory,
    tags=["predictions"],
    responses=responses(404),
)
def get_predictions(document_id: DocId, ctx: Ctx) -> PredictionHistory:
    """Every prediction made for this document, oldest first."""
    return review.history(ctx, document_id)


@protected.get(
    "/prediction/history/{document_id}",
    response_model=PredictionHistory,
    tags=["predictions"],
    responses=responses(404),
    deprecated=True,
)
def get_prediction_history(document_id: DocId, ctx: Ctx) -> PredictionHistory:
    """The seed's path for GET /documents/{document_id}/predictions."""
    return review.history(ctx, document_id)


@protected.post("/predict/text", response_model=PredictionResponse, tags=["predictions"], responses=responses())
def predict_text(body: PredictTextRequest, ctx: Ctx) -> PredictionResponse:
    """Classify text now."""
    return serving.predict_text(ctx, body.text, body.return_all_scores)


@protected.post(
    "/upload-and-predict",
    response_model=UploadPredictionResponse,
    tags=["predictions"],
    responses=responses(413, 415, 504),
)
def upload_and_predict(
    file: UploadedFile,
    ctx: Ctx,
    api: Api,
    ocr_language: Annotated[
        str | None, Form(pattern=OCR_LANGUAGE_PATTERN, max_length=64, description="Tesseract languages, e.g. eng+rus")
    ] = None,
    return_all_scores: Annotated[bool, Form()] = False,
    ocr_language_query: Annotated[
        str | None, Query(alias="ocr_language", pattern=OCR_LANGUAGE_PATTERN, max_length=64, include_in_schema=False)
    ] = None,
    return_all_scores_query: Annotated[bool | None, Query(alias="return_all_scores", include_in_schema=False)] = None,
) -> UploadPredictionResponse:
    """Validate, extract text and classify one small file now, within a time budget (nothing is stored).
    `ocr_language` and `return_all_scores` are also taken as query parameters, as the seed did."""
    languages = ocr_language or ocr_language_query
    all_scores = return_all_scores or bool(return_all_scores_query)
    return sync_predict.upload_and_predict(
        ctx,
        api,
        file.filename,
        _read_upload(file, api),
        languages.replace(",", "+") if languages else None,
        all_scores,
    )


@protected.post(
    "/predict/document/{document_id}",
    response_model=DocumentPredictionResponse,
    tags=["predictions"],
    responses=responses(404, 409),
)
def predict_document(
    document_id: DocId, ctx: Ctx, return_all_scores: Annotated[bool, Query()] = False
) -> DocumentPredictionResponse:
    """Classify a stored document's text again with the current champion; recorded in its history."""
    return documents.repredict_document(ctx, document_id, return_all_scores)


@protected.put(
    "/documents/{document_id}/label",
    response_model=DocumentResponse,
    tags=["documents"],
    responses=responses(404, 409),
)
def set_label(document_id: DocId, body: LabelRequest, ctx: Ctx, request: Request) -> DocumentResponse:
    """A person's correct class for the document (feedback for retraining): one of GET /model's classes, or
    out_of_scope. The same decision as the review page's: a NEEDS_REVIEW document leaves the queue (REVIEWED),
    and the decision joins its history (GET /documents/{id}/predictions)."""
    decided = review.decide(ctx, document_id, body.label, body.reviewer or "api", api_key_id(request))
    return decided.document


@protected.get("/model", response_model=ModelInfo, tags=["service"], responses=responses())
def get_model(ctx: Ctx) -> ModelInfo:
    """The champion: version, classes, held-out evaluation."""
    return serving.model_info(ctx)
