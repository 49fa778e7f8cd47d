"""The pipeline's steps: one function each, PipelineState in, PipelineState out.

A Lambda handler wraps exactly one of these; the embedded runner calls them in the order the state
machine does. They know the stores only through the StepContext's interfaces. Each step imports its
engine (Pillow/pdfium/Tesseract, onnxruntime) when it runs, so a function carries and loads only its own:
RecordFailure's layers hold no numpy, Classify's no pdfium (tests/infra/test_layers.py).

What ExtractText and Classify compute apart from the stores (the text read with the document's OCR options,
the class under the review rule, their signals) is docflow.pipeline.compute's, which POST
/upload-and-predict calls too; here are the reads and writes around it.

A little over 400 lines on purpose: every step of the flow and the record writes they share (the document
record a state makes, the upload's outcome, the result file before the record) read best side by side, in
the order the state machine runs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from docflow import telemetry
from docflow.context import StepContext
from docflow.errors import PermanentError
from docflow.pipeline.compute import (
    classify_text,
    read_text,
    report_ocr_confidence,
    report_ocr_seconds,
    report_prediction,
)
from docflow.pipeline.fault_point import fault_point
from docflow.pipeline.state import PagePart, PageRange, PageRangeTask, PipelineState
from docflow.ports import BlobNotFoundError
from docflow.records import DocumentRecord, PredictionRecord, UploadRecord, object_id
from docflow.values import ExtractionResult, MediaType, RejectionCode, Status, utcnow

if TYPE_CHECKING:
    from docflow.domain.classifier import TextClassifier


def text_key(document_id: str) -> str:
    return f"text/{document_id}.json"


def result_key(document_id: str) -> str:
    return f"results/{document_id}.json"


def _elapsed(state: PipelineState, step: str, started: float) -> dict[str, float]:
    return {**state.timings, step: round(time.perf_counter() - started, 4)}


def document_record(state: PipelineState, existing: DocumentRecord | None = None, **fields: Any) -> DocumentRecord:
    """The document's record as this state knows it; `existing` keeps its creation time and user label."""
    now = utcnow()
    prediction = state.prediction
    values: dict[str, Any] = {
        "document_id": state.document_id,
        "status": state.status,
        "source": state.ref.source,
        "version_id": state.ref.version_id,
        "blob_key": state.ref.key,
        "media_type": state.media_type,
        "size_bytes": state.size_bytes,
        "pages": state.pages,
        "text_source": state.text_source,
        "ocr_confidence": state.ocr_confidence,
        "predicted_class": prediction.predicted_class if prediction else None,
        "confidence": prediction.confidence if prediction else None,
        "scores": prediction.scores if prediction else None,
        "model_version": prediction.model_version if prediction else None,
        "code": state.code,
        "reason": state.reason,
        "label": existing.label if existing else None,
        "owner": state.owner if state.owner is not None else (existing.owner if existing else None),
        "timings": state.timings,
        "created_at": existing.created_at if existing else now,
        "updated_at": now,
    }
    return DocumentRecord(**{**values, **fields})


def _read_blob(ctx: StepContext, key: str, version_id: str | None = None) -> bytes:
    try:
        return ctx.blobs.get(key, version_id=version_id)
    except BlobNotFoundError:
        version = f" version {version_id}" if version_id else ""
        raise PermanentError(f"object {key!r}{version} not found in {ctx.blobs.describe()}") from None


def _read_document(ctx: StepContext, state: PipelineState) -> bytes:
    """The uploaded bytes: the very object version the event named, even if the key was written again since."""
    return _read_blob(ctx, state.ref.key, state.ref.version_id)


def _owned(state: PipelineState, existing: DocumentRecord | None) -> bool:
    """Whether `existing` is this run's own unfinished work: a step of the run retried after its first
    attempt wrote the record (its reply lost, botocore's retry of the write, or the Lambda invocation
    retried by the state machine) is that same delivery going on, not another one."""
    if existing is None or state.owner is None:
        return False
    return existing.owner == state.owner and not existing.status.terminal


def _stale_before(ctx: StepContext) -> datetime:
    """An unfinished document record last written before this is an orphan (Settings.processing_lease_seconds,
    StepContext.orphans_before)."""
    stale = utcnow() - timedelta(seconds=ctx.settings.processing_lease_seconds)
    return max(stale, ctx.orphans_before) if ctx.orphans_before else stale


def _streamed_sha256(ctx: StepContext, state: PipelineState) -> str:
    """SHA-256 of the event's object version, read in chunks."""
    digest = hashlib.sha256()
    for chunk in ctx.blobs.iter_chunks(state.ref.key, version_id=state.ref.version_id):
        digest.update(chunk)
    return digest.hexdigest()


def _take_over(
    ctx: StepContext, state: PipelineState, fresh: DocumentRecord, stale_before: datetime | None = None
) -> bool:
    """Restart the document's record for this delivery (see RecordStore.restart_document). A lost reply counts
    too: the write landed, the store's retry then failed the condition, and the record on file is this run's."""
    return ctx.records.restart_document(fresh, stale_before=stale_before) or _owned(
        state, ctx.records.get_document(fresh.document_id)
    )


def _recorded(ctx: StepContext, state: PipelineState, document_id: str, outcome: Status) -> bool:
    """Whether a delivery of this very object was recorded before with this outcome (at-least-once delivery).
    Not a RECEIVED placeholder (the API's, before the pipeline ran) nor a FAILED one (a retry runs again)."""
    wanted = state.ref.object_id
    return any(u.object_id == wanted and u.status == outcome for u in ctx.records.list_uploads(document_id))


@fault_point("Validate")
def validate_step(state: PipelineState, ctx: StepContext) -> PipelineState:
    """Check the bytes; decide whether this upload is new work, a duplicate, or a redelivery."""
    from docflow.domain.validation import validate_document

    started = time.perf_counter()
    limits = ctx.settings.limits
    try:
        size = ctx.blobs.size(state.ref.key, version_id=state.ref.version_id)
    except BlobNotFoundError:
        raise PermanentError(f"object {state.ref.key!r} not found in {ctx.blobs.describe()}") from None

    if size > limits.max_bytes:
        rejected = state.model_copy(
            update={
                "document_id": _streamed_sha256(ctx, state),  # never hold an oversized upload in memory
                "size_bytes": size,
                "status": Status.REJECTED,
                "code": RejectionCode.TOO_LARGE,
                "reason": f"the file is {size:,} bytes; the limit is {limits.max_bytes:,} bytes",
                "timings": _elapsed(state, "validate", started),
            }
        )
        return _rejected(rejected, ctx)

    report = validate_document(_read_document(ctx, state), limits)
    base = state.model_copy(
        update={
            "document_id": report.document_id,
            "size_bytes": report.size_bytes,
            "media_type": report.media_type,
            "pages": report.pages,
        }
    )
    if not report.accepted:
        return _rejected(
            base.model_copy(
                update={
                    "status": Status.REJECTED,
                    "code": report.code,
                    "reason": report.reason,
                    "timings": _elapsed(state, "validate", started),
                }
            ),
            ctx,
        )

    fresh = document_record(base, status=Status.PROCESSING)
    existing = ctx.records.create_document(fresh)
    if existing is not None:
        # A restart (of a FAILED document, or of an orphan) replaces the record on file: it keeps that
        # record's creation time and the label a user gave it.
        fresh = document_record(base, existing, status=Status.PROCESSING)
    update: dict[str, object] = {"timings": _elapsed(state, "validate", started)}
    ranges = page_ranges(report.pages or 1, ctx.settings.pages_per_chunk)
    if report.media_type == MediaType.PDF and (report.pages or 0) > ctx.settings.large_pdf_pages:
        update["page_ranges"] = ranges
    # The record on file may be this run's own: the create succeeded but its reply was lost (botocore's retry
    # then fails the condition) or this is the state machine's retry of Validate. That is this delivery's work.
    if existing is None or _owned(state, existing):
        update.update(status=Status.PROCESSING, proceed=True)
    elif existing.status == Status.FAILED:
        # A failed document may be sent again: that is the user's retry. Of two deliveries at once, the one
        # that takes the record over from FAILED does the work; the other reports it in progress.
        if _take_over(ctx, state, fresh):
            update.update(status=Status.PROCESSING, proceed=True)
        else:
            update.update(status=Status.PROCESSING, replay=True)
    elif (
        existing.updated_at < (stale := _stale_before(ctx))
        and not existing.status.terminal
        and _take_over(ctx, state, fresh, stale_before=stale)
    ):
        # Unfinished and untouched for longer than any run takes, or from before this run began when no
        # other run shares the store: the run that held it died (a killed CLI, a timed-out execution).
        # This delivery takes the work over, or the document would never end.
        update.update(status=Status.PROCESSING, proceed=True)
    elif (existing.source, existing.version_id) == (state.ref.source, state.ref.version_id):
        # Idempotency key: (content hash, object version). The object that owns this content, delivered
        # again (EventBridge is at-least-once; the CLI run twice): report the outcome on record (or in
        # progress, when a concurrent delivery owns it); never process or count it twice.
        update.update(status=existing.status, replay=True, reason=existing.reason, code=existing.code)
    else:
        # Known content from another object: another name, or the same name put again as a new version.
        # A delivery of that object seen before is a replay of its DUPLICATE outcome, recorded once.
        first = object_id(existing.source, existing.version_id)
        update.update(
            status=Status.DUPLICATE,
            duplicate_of=existing.document_id,
            reason=f"same content as {first} (document {existing.document_id[:12]}…)",
            replay=_recorded(ctx, state, existing.document_id, Status.DUPLICATE),
        )
    if update.get("proceed"):
        # Counted once: create_document/restart_document let one delivery own the work. An upload that ends
        # here (DUPLICATE) is counted where its record is created (RecordOutcome), by one delivery too.
        telemetry.document_uploaded()
    return base.model_copy(update=update)


def _rejected(state: PipelineState, ctx: StepContext) -> PipelineState:
    """A rejection; a redelivery of an object already rejected is a replay (recorded and counted once)."""
    assert state.document_id is not None
    if _recorded(ctx, state, state.document_id, Status.REJECTED):
        return state.model_copy(update={"replay": True})
    return state


def page_ranges(pages: int, per_chunk: int) -> list[PageRange]:
    """Consecutive ranges of at most per_chunk pages covering 1..pages."""
    return [
        PageRange(first_page=first, last_page=min(first + per_chunk - 1, pages))
        for first in range(1, pages + 1, per_chunk)
    ]


def _upload(state: PipelineState, document_id: str, status: Status, duplicate_of: str | None = None) -> UploadRecord:
    ref = state.ref
    return UploadRecord(
        document_id=document_id, source=ref.source, version_id=ref.version_id, status=status, duplicate_of=duplicate_of
    )


@fault_point("RecordOutcome")
def record_outcome_step(state: PipelineState, ctx: StepContext) -> PipelineState:
    """Record an upload that ends at validation: REJECTED, DUPLICATE, or a redelivery."""
    if state.document_id is None:
        raise PermanentError("record outcome needs a validated document")
    if state.replay:
        return state  # its upload record was written when it was first processed
    if state.status not in (Status.REJECTED, Status.DUPLICATE):
        raise PermanentError(f"record outcome cannot record status {state.status}")
    if state.status == Status.REJECTED:
        # Before the upload record: once that exists, a redelivery replays it. The same bytes are rejected
        # the same way, so a concurrent delivery writing this too changes nothing.
        ctx.records.put_document(document_record(state), keep_label=True)
    if ctx.records.create_upload(_upload(state, state.document_id, state.status, state.duplicate_of)) is not None:
        # Another delivery of this very object recorded it first (both validated before either recorded).
        return state.model_copy(update={"replay": True})
    telemetry.document_uploaded()
    # Its pipeline was validation alone: that is its time to a terminal status.
    telemetry.document_processed(state.status, sum(state.timings.values()))
    return state


def _extract(
    state: PipelineState, ctx: StepContext, first_page: int = 1, last_page: int | None = None
) -> ExtractionResult:
    """Text of the document's pages first_page..last_page, with the document's OCR languages."""
    if state.document_id is None or state.media_type is None:
        raise PermanentError("text extraction needs a validated document")
    data = _read_document(ctx, state)
    result = read_text(ctx, data, state.media_type, state.languages, first_page, last_page)
    report_ocr_seconds(result)
    return result


def _with_text(state: PipelineState, ctx: StepContext, result: ExtractionResult, started: float) -> PipelineState:
    """Park the document's text in the blob store (Step Functions caps a state at 256 KB) and point to it."""
    assert state.document_id
    key = text_key(state.document_id)
    ctx.blobs.put(key, result.model_dump_json().encode(), content_type="application/json")
    report_ocr_confidence(result)
    return state.model_copy(
        update={
            "text_key": key,
            "text_source": result.text_source,
            "ocr_confidence": result.mean_confidence,
            "pages": len(result.pages),
            "parts": None,  # merged page ranges are not needed any more
            "timings": _elapsed(state, "extract", started),
        }
    )


@fault_point("ExtractText")
def extract_text_step(state: PipelineState, ctx: StepContext) -> PipelineState:
    """Text per page: the PDF's own text layer where it has one, Tesseract otherwise."""
    started = time.perf_counter()
    return _with_text(state, ctx, _extract(state, ctx), started)


@fault_point("ExtractPages")
def extract_pages_step(task: PageRangeTask, ctx: StepContext) -> PagePart:
    """One page range of a long PDF (a Map iteration): extract and park the text in the blob store."""
    result = _extract(task.state, ctx, task.first_page, task.last_page)
    key = f"text/{task.state.document_id}/pages-{task.first_page:05d}-{task.last_page:05d}.json"
    ctx.blobs.put(key, result.model_dump_json().encode(), content_type="application/json")
    return PagePart(first_page=task.first_page, last_page=task.last_page, key=key)


@fault_point("MergeText")
def merge_text_step(state: PipelineState, ctx: StepContext) -> PipelineState:
    """Join the page ranges, in page order, into the document's text."""
    started = time.perf_counter()
    if state.document_id is None or not state.parts:
        raise PermanentError("merge text needs the extracted page ranges")
    pages = []
    for part in sorted(state.parts, key=lambda p: p.first_page):
        pages += ExtractionResult.model_validate_json(_read_blob(ctx, part.key)).pages
    return _with_text(state, ctx, ExtractionResult(pages=pages), started)


@fault_point("Classify")
def classify_step(state: PipelineState, ctx: StepContext) -> PipelineState:
    """Name the document's type; below the review threshold it needs a person."""
    started = time.perf_counter()
    if state.document_id is None or state.text_key is None:
        raise PermanentError("classify needs extracted text")
    extraction = ExtractionResult.model_validate_json(_read_blob(ctx, state.text_key))
    model = ctx.classifier()
    _report_model(model)
    prediction, review = classify_text(model, extraction, ctx.settings.review_threshold)
    status = Status.NEEDS_REVIEW if review else Status.CLASSIFIED
    code, reason = review if review else (None, None)
    timings = _elapsed(state, "classify", started)
    classified = state.model_copy(
        update={
            "status": status,
            "code": code,
            "reason": reason,
            "prediction": prediction,
            "result_key": result_key(state.document_id),
            "timings": timings,
        }
    )
    record = _record_classification(classified, ctx)
    report_prediction(prediction)
    if not state.status.terminal:  # a pipeline run, not the API's re-classification of a finished document
        telemetry.document_processed(status, (record.updated_at - record.created_at).total_seconds())
    return classified


_reported_models: set[str] = set()


def _report_model(model: TextClassifier) -> None:
    """The held-out accuracy of a model, once per model version and process (it reads metrics.json)."""
    if model.version in _reported_models:
        return
    _reported_models.add(model.version)
    # An unreadable metrics.json does not stop the model from classifying.
    with contextlib.suppress(ValueError):
        telemetry.model_metrics(model.version, model.metrics)


def _record_classification(state: PipelineState, ctx: StepContext) -> DocumentRecord:
    assert state.document_id and state.prediction and state.result_key
    prediction = state.prediction
    record = document_record(state, ctx.records.get_document(state.document_id))
    # Result file first, record last: a reader who sees the status can always fetch the result.
    ctx.blobs.put(
        state.result_key,
        json.dumps(
            {"document": record.model_dump(mode="json"), "prediction": prediction.model_dump(mode="json")},
            indent=2,
        ).encode(),
        content_type="application/json",
    )
    ctx.records.add_prediction(PredictionRecord.of(state.document_id, prediction))
    # keep_label: a label set through the API since the read above (this step takes seconds) is kept by
    # the write itself; the record's label only fills in where none is on file.
    ctx.records.put_document(record, keep_label=True)
    if record.status is Status.NEEDS_REVIEW:
        record = _settled_by_label(record, ctx)
    ctx.records.put_upload(_upload(state, state.document_id, state.status))
    return record


def _settled_by_label(record: DocumentRecord, ctx: StepContext) -> DocumentRecord:
    """A document that ends NEEDS_REVIEW although a person has labelled it (while it was being processed, or
    before a retry of it) is REVIEWED: the label is their decision, and it must not wait in the review queue
    for a second one. Written only if it is still NEEDS_REVIEW, so a decision made in the queue meanwhile
    stands."""
    stored = ctx.records.get_document(record.document_id)
    if stored is None or stored.status is not Status.NEEDS_REVIEW or stored.label is None:
        return record
    settled = stored.model_copy(update={"status": Status.REVIEWED, "updated_at": utcnow()})
    if ctx.records.put_document(settled, keep_label=True, if_status=Status.NEEDS_REVIEW.value):
        return settled
    return ctx.records.get_document(record.document_id) or record


def _content_hash(state: PipelineState, ctx: StepContext) -> str | None:
    """SHA-256 of the event's object version; None when it cannot be read (gone, or still failing) or is
    larger than the upload limit (a failure is recorded quickly, whatever the upload's size)."""
    try:
        if ctx.blobs.size(state.ref.key, version_id=state.ref.version_id) > ctx.settings.limits.max_bytes:
            return None
        return _streamed_sha256(ctx, state)
    except Exception:  # the failure being recorded may be this very read: record it anyway
        return None


def record_failure_step(state: PipelineState, ctx: StepContext) -> PipelineState:
    """The Catch target: the document ends FAILED with the error and its cause. Its blob is kept."""
    error = state.error
    code = error.Error if error else "UnknownError"
    reason = error.message if error else "the pipeline failed without an error description"
    # Failed before validation: key the failure by the content when the bytes can be read now, so that it
    # lands on the document an API client polls (whose RECEIVED record it then replaces) and a retry of the
    # same content finds it; else by the upload, so that it is not lost.
    document_id = (
        state.document_id
        or _content_hash(state, ctx)
        or hashlib.sha256(f"upload:{state.ref.source}".encode()).hexdigest()
    )
    failed = state.model_copy(
        update={"document_id": document_id, "status": Status.FAILED, "code": code, "reason": reason}
    )
    existing = ctx.records.get_document(document_id)
    # Only the upload that owns the processing may mark the document failed: a duplicate's failure
    # must not overwrite the original's outcome. Validate may have failed after it created the record
    # (its owner is then this run's, its status still PROCESSING): that document is this run's to fail.
    owned = _owned(state, existing)
    if existing is None or state.proceed or owned:
        ctx.records.put_document(document_record(failed, existing), keep_label=True)  # a label set meanwhile stays
    if ctx.records.create_upload(_upload(state, document_id, Status.FAILED)) is not None:
        return failed  # this object's outcome is on record (another delivery's): never overwrite or recount it
    if not state.proceed and not state.replay:  # not counted at Validate (failed there, or before RecordOutcome)
        telemetry.document_uploaded()
    if (state.proceed or owned) and existing is not None:
        seconds = (utcnow() - existing.created_at).total_seconds()
    else:
        seconds = sum(state.timings.values())
    telemetry.document_processed(Status.FAILED, seconds)
    return failed
