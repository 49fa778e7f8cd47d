"""Documents: one document's state and uploads, the listing by status with an opaque cursor, and a stored
document classified again by the champion."""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING

from docflow.api.errors import ApiError
from docflow.api.schemas import (
    DocumentPage,
    DocumentPrediction,
    DocumentPredictionResponse,
    DocumentResponse,
    UploadInfo,
)
from docflow.context import StepContext
from docflow.errors import TransientError
from docflow.ports import BlobNotFoundError
from docflow.records import DocumentRecord, UploadRecord
from docflow.values import Status

if TYPE_CHECKING:
    pass
from docflow.api.serving import classifier, prediction_response

# -- documents ------------------------------------------------------------------------------------------------


def document_response(record: DocumentRecord, uploads: list[UploadRecord] | None) -> DocumentResponse:
    prediction = None
    if record.predicted_class is not None and record.confidence is not None:
        prediction = DocumentPrediction(
            predicted_class=record.predicted_class,
            confidence_score=record.confidence,
            # Whether the pipeline found it confident, under the threshold that applied when it was classified.
            is_confident=record.status is Status.CLASSIFIED,
            model_version=record.model_version,
            all_scores=record.scores,
        )
    return DocumentResponse(
        document_id=record.document_id,
        status=record.status,
        terminal=record.status.terminal,
        code=record.code,
        reason=record.reason,
        source=record.source,
        media_type=record.media_type,
        size_bytes=record.size_bytes,
        pages=record.pages,
        text_source=record.text_source,
        ocr_confidence=record.ocr_confidence,
        prediction=prediction,
        label=record.label,
        rescored_from=record.rescored_from,
        timings=record.timings,
        created_at=record.created_at,
        updated_at=record.updated_at,
        uploads=None if uploads is None else [_upload_info(u) for u in uploads],
    )


def _upload_info(upload: UploadRecord) -> UploadInfo:
    return UploadInfo(
        source=upload.source, status=upload.status, duplicate_of=upload.duplicate_of, received_at=upload.received_at
    )


def _not_found(document_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no document {document_id}")


def _require_record(ctx: StepContext, document_id: str) -> DocumentRecord:
    record = ctx.records.get_document(document_id)
    if record is None:
        raise _not_found(document_id)
    return record


def get_document(ctx: StepContext, document_id: str) -> DocumentResponse:
    record = ctx.records.get_document(document_id)
    uploads = ctx.records.list_uploads(document_id)
    if record is not None:
        response = document_response(record, uploads)
        if record.status is Status.FAILED and any(u.status is Status.RECEIVED for u in uploads):
            # Sent again (the user's retry) and not picked up yet: the failure on record is about to be
            # replaced, so a client polling for a terminal status must keep polling.
            response = response.model_copy(update={"status": Status.RECEIVED, "terminal": False})
        return response
    if not uploads:
        raise _not_found(document_id)
    # Accepted by the API, not yet picked up by the pipeline: the upload's own status is all there is.
    latest = max(uploads, key=lambda u: u.received_at)
    return DocumentResponse(
        document_id=document_id,
        status=latest.status,
        terminal=latest.status.terminal,
        source=latest.source,
        created_at=min(u.received_at for u in uploads),
        uploads=[_upload_info(u) for u in uploads],
    )


def encode_cursor(raw: str | None) -> str | None:
    # Opaque to clients: the store's own cursor (SQLite: time|id; DynamoDB: a start key) wrapped and encoded.
    return base64.urlsafe_b64encode(json.dumps({"c": raw}).encode()).decode().rstrip("=") if raw else None


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        wrapped = json.loads(base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True))
        raw = wrapped["c"]
        if isinstance(raw, str) and raw:
            return raw
    except (binascii.Error, ValueError, TypeError, KeyError):
        pass
    raise ApiError(422, "invalid_cursor", "cursor is not one this API returned")


# What an upload can be but a document record never is: listing by them would always come back empty.
_UPLOAD_ONLY = {
    Status.RECEIVED: "an upload not yet picked up has no document record yet; GET /documents/{id} reports it",
    Status.DUPLICATE: "DUPLICATE is an upload's outcome (its document is the original); see a document's uploads",
}


def list_documents(ctx: StepContext, status: Status | None, limit: int, cursor: str | None) -> DocumentPage:
    if status in _UPLOAD_ONLY:
        raise ApiError(422, "invalid_status", f"no document is listed as {status}: {_UPLOAD_ONLY[status]}")
    raw = decode_cursor(cursor)
    try:
        records, next_raw = ctx.records.list_documents(status=status.value if status else None, limit=limit, cursor=raw)
    except TransientError:
        raise
    except Exception as exc:
        if raw is None:
            raise
        # A tampered cursor reaches the store as a malformed start key; that is the client's error.
        raise ApiError(422, "invalid_cursor", "cursor is not one this API returned") from exc
    return DocumentPage(items=[document_response(r, None) for r in records], next_cursor=encode_cursor(next_raw))


def repredict_document(ctx: StepContext, document_id: str, all_scores: bool) -> DocumentPredictionResponse:
    """Classify a stored document's extracted text again with the current champion, under the pipeline's
    review rule, recorded in its history (docflow.pipeline.rescore.score_again). A document a person decided
    keeps their decision."""
    # Imported here: classifying again is the one documents endpoint that needs the pipeline's steps.
    from docflow.pipeline.rescore import score_again

    record = _require_record(ctx, document_id)
    if record.status not in (Status.CLASSIFIED, Status.NEEDS_REVIEW, Status.REVIEWED):
        raise ApiError(
            409,
            "not_classifiable",
            f"document {document_id} is {record.status}: only documents whose text was "
            "extracted (CLASSIFIED, NEEDS_REVIEW or REVIEWED) can be classified again",
        )
    classifier(ctx)  # a missing model is a 503 here, not a failure
    try:
        rescored = score_again(ctx, record)
    except BlobNotFoundError:
        raise ApiError(
            409, "text_missing", f"the extracted text of document {document_id} is no longer stored"
        ) from None
    if rescored is None:
        raise ApiError(409, "conflict", f"document {document_id} changed while it was classified; try again")
    prediction, updated = rescored.prediction, rescored.record
    return DocumentPredictionResponse(
        **prediction_response(prediction, rescored.confident, all_scores),
        document_id=document_id,
        status=updated.status,
        reason=updated.reason,
    )
