"""The review queue as plain functions of the StepContext: what is waiting, a document's text and page
previews, a person's decision and its undo. The routes (review_routes.py) only parse and answer.

A decision is one atomic write (RecordStore.decide): the document's label, its status (NEEDS_REVIEW becomes
REVIEWED, and it leaves the queue; a correction of a settled document keeps its status) and the decision in
its history, beside what the model had suggested. It counts as a user's label for retraining, as
PUT /documents/{id}/label always has (the two are the same operation).
"""

from __future__ import annotations

import secrets
from pathlib import PurePosixPath

from docflow.api import documents, serving
from docflow.api.errors import ApiError
from docflow.api.schemas import (
    DecisionInfo,
    DecisionResponse,
    DocumentResponse,
    DocumentText,
    DocumentTextPage,
    PredictionHistory,
    PredictionHistoryItem,
    ReviewQueueItem,
    ReviewQueuePage,
)
from docflow.context import StepContext
from docflow.domain.preview import PreviewError, render_preview
from docflow.ports import BlobNotFoundError
from docflow.records import OUT_OF_SCOPE_LABEL, DocumentRecord, ReviewDecision
from docflow.retrain import label_added
from docflow.values import ExtractionResult, MediaType, ReviewCode, Status, utcnow

_ATTEMPTS = 3  # a decision raced by the pipeline's own write is tried again on the fresh record


def queue(
    ctx: StepContext, predicted_class: str | None, code: ReviewCode | None, limit: int, cursor: str | None
) -> ReviewQueuePage:
    raw = documents.decode_cursor(cursor)
    reason = code.value if code else None
    try:
        records, next_raw = ctx.records.list_review_queue(predicted_class, reason, limit, raw)
    except ValueError as exc:  # a tampered cursor
        raise ApiError(422, "invalid_cursor", "cursor is not one this API returned") from exc
    total = ctx.records.count_review_queue(predicted_class, reason)
    return ReviewQueuePage(
        total=total, items=[_queue_item(r) for r in records], next_cursor=documents.encode_cursor(next_raw)
    )


def _queue_item(record: DocumentRecord) -> ReviewQueueItem:
    return ReviewQueueItem(
        document_id=record.document_id,
        file_name=display_name(record.source),
        media_type=record.media_type,
        pages=record.pages,
        text_source=record.text_source,
        ocr_confidence=record.ocr_confidence,
        predicted_class=record.predicted_class,
        confidence_score=record.confidence,
        all_scores=record.scores,
        code=record.code,
        reason=record.reason,
        model_version=record.model_version,
        queued_at=record.updated_at,
    )


def display_name(source: str) -> str:
    """The file's own name, without the folders or bucket it came from (s3://bucket/incoming/<id>/a.pdf)."""
    name = PurePosixPath(source.split("?versionId=", 1)[0].replace("\\", "/")).name
    return name or source


def _record(ctx: StepContext, document_id: str) -> DocumentRecord:
    record = ctx.records.get_document(document_id)
    if record is None:
        raise ApiError(404, "not_found", f"no document {document_id}")
    return record


def document_text(ctx: StepContext, document_id: str) -> DocumentText:
    # Imported here: the pipeline's steps (and their engines' imports) only for a document's text.
    from docflow.pipeline.steps import text_key

    _record(ctx, document_id)
    try:
        extraction = ExtractionResult.model_validate_json(ctx.blobs.get(text_key(document_id)))
    except BlobNotFoundError:
        raise ApiError(404, "text_missing", f"no extracted text is stored for document {document_id}") from None
    return DocumentText(
        document_id=document_id,
        pages=[
            DocumentTextPage(page=p.page, text=p.text, source=p.source, confidence=p.confidence)
            for p in extraction.pages
        ],
    )


def page_preview(ctx: StepContext, document_id: str, page: int) -> tuple[bytes, str]:
    """An image of one page, small enough for a browser (docflow.domain.preview), and its media type."""

    record = _record(ctx, document_id)
    if record.blob_key is None or record.media_type is None:
        raise ApiError(404, "no_preview", f"document {document_id} has no stored file to show")
    if record.pages is not None and not 1 <= page <= record.pages:
        raise ApiError(404, "no_such_page", f"document {document_id} has {record.pages} page(s), not page {page}")
    try:
        data = ctx.blobs.get(record.blob_key, version_id=record.version_id)
    except BlobNotFoundError:
        raise ApiError(404, "no_preview", f"the file of document {document_id} is no longer stored") from None
    try:
        return render_preview(data, MediaType(record.media_type), page, ctx.settings.limits)
    except PreviewError as exc:
        raise ApiError(422, "no_preview", str(exc)) from exc


def allowed_labels(ctx: StepContext) -> tuple[str, ...]:
    return (*serving.classifier(ctx).labels, OUT_OF_SCOPE_LABEL)


def decide(
    ctx: StepContext,
    document_id: str,
    label: str,
    reviewer: str,
    api_key_id: str | None,
    expect_status: Status | None = None,
) -> DecisionResponse:
    """Record a person's decision about a document; 404 if there is none, 422 for a label that is not one of
    the model's classes (or out_of_scope). With ``expect_status``, 409 when the document is no longer in that
    status (another person decided it first): a decision made on what a page showed is not a correction."""
    allowed = allowed_labels(ctx)
    if label not in allowed:
        raise ApiError(422, "unknown_label", f"label {label!r} is not one of: {', '.join(allowed)}")
    for _ in range(_ATTEMPTS):
        record = _record(ctx, document_id)
        if expect_status is not None and record.status is not expect_status:
            raise ApiError(409, "already_decided", _changed(record, expect_status))
        now = utcnow()
        decision = ReviewDecision(
            document_id=document_id,
            decision_id=f"{now.isoformat()}#{secrets.token_hex(4)}",
            label=label,
            reviewer=reviewer,
            api_key_id=api_key_id,
            decided_at=now,
            predicted_class=record.predicted_class,
            confidence=record.confidence,
            model_version=record.model_version,
            previous_label=record.label,
            previous_status=record.status,
            previous_updated_at=record.updated_at,
            status=Status.REVIEWED if record.status is Status.NEEDS_REVIEW else record.status,
        )
        updated = ctx.records.decide(decision)
        if updated is not None:
            break
    else:
        raise ApiError(409, "conflict", f"document {document_id} kept changing; try again")
    if record.label != label:  # a new training example: counted towards retraining (docflow/retrain.py)
        label_added(ctx.settings, ctx.records)
    return DecisionResponse(decision=decision_info(decision), document=_document(updated))


def _changed(record: DocumentRecord, expected: Status) -> str:
    now = f"it is {record.status}" + (f" as {record.label!r}" if record.label else "")
    return f"document {record.document_id} is no longer {expected}: {now}"


def undo_last(ctx: StepContext, document_id: str, decision_id: str | None = None) -> DecisionResponse:
    """Take back the document's latest decision (not yet undone): its label and status return to what they
    were, and the document to its place in the queue. With ``decision_id`` (the review page sends the one its
    decision got), 409 unless that is the latest: a person's undo never takes back someone else's decision.
    409 too when the document has changed since."""
    _record(ctx, document_id)
    live = [d for d in ctx.records.list_decisions(document_id) if d.undone_at is None]
    if not live:
        raise ApiError(404, "no_decision", f"document {document_id} has no decision to undo")
    last = live[-1]
    if decision_id is not None and last.decision_id != decision_id:
        raise ApiError(
            409,
            "not_latest_decision",
            f"that decision is not the latest on document {document_id} (now {last.label!r} by "
            f"{last.reviewer}): nothing undone",
        )
    undone_at = utcnow()
    updated = ctx.records.undo_decision(last, undone_at)
    if updated is None:
        raise ApiError(409, "conflict", f"document {document_id} has changed since that decision; nothing undone")
    return DecisionResponse(
        decision=decision_info(last.model_copy(update={"undone_at": undone_at})), document=_document(updated)
    )


def decision_info(decision: ReviewDecision) -> DecisionInfo:
    return DecisionInfo(
        decision_id=decision.decision_id,
        label=decision.label,
        reviewer=decision.reviewer,
        api_key_id=decision.api_key_id,
        decided_at=decision.decided_at,
        predicted_class=decision.predicted_class,
        confidence_score=decision.confidence,
        model_version=decision.model_version,
        previous_status=decision.previous_status,
        status=decision.status,
        undone_at=decision.undone_at,
    )


def _document(record: DocumentRecord) -> DocumentResponse:
    return documents.document_response(record, None)


def history(ctx: StepContext, document_id: str) -> PredictionHistory:
    """Every prediction made for the document and every decision people made about it, each oldest first."""
    predictions = ctx.records.list_predictions(document_id)
    decisions = ctx.records.list_decisions(document_id)
    if not predictions and not decisions and ctx.records.get_document(document_id) is None:
        raise ApiError(404, "not_found", f"no document {document_id}")
    return PredictionHistory(
        document_id=document_id,
        predictions=[
            PredictionHistoryItem(
                predicted_class=p.predicted_class,
                confidence_score=p.confidence,
                model_name=p.model_name,
                model_version=p.model_version,
                all_scores=p.scores,
                created_at=p.created_at,
            )
            for p in sorted(predictions, key=lambda p: p.created_at)
        ],
        decisions=[decision_info(d) for d in decisions],
    )
