"""What each endpoint does, as plain functions of the StepContext: the routes only parse and answer.

Heavy libraries (onnxruntime, Pillow, pdfium, Tesseract) are imported where they are used, so the API's
Lambda cold start pays only for what a request needs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docflow import telemetry
from docflow.api.config import ApiSettings
from docflow.api.errors import ApiError
from docflow.api.schemas import (
    ClassMetrics,
    DocumentAccepted,
    DocumentPage,
    DocumentPrediction,
    DocumentPredictionResponse,
    DocumentResponse,
    HealthResponse,
    ModelInfo,
    ModelMetrics,
    PredictionResponse,
    ScanHeadInfo,
    StoresHealth,
    UploadInfo,
    UploadPredictionResponse,
    UploadUrlRequest,
    UploadUrlResponse,
)
from docflow.api.uploads import UploadGrant, new_upload_key, safe_file_name, sign_grant, upload_source
from docflow.api.worker import PendingUpload, QueueFullError, StoppingError, Submitter
from docflow.context import StepContext
from docflow.errors import DocflowError, TransientError
from docflow.models import Prediction, RejectionCode, Status
from docflow.records import DocumentRecord, UploadRecord

if TYPE_CHECKING:
    from docflow.domain.classifier import TextClassifier

UPLOAD_URL_HINT = "use POST /documents/upload-url for larger files"


# -- the model ----------------------------------------------------------------------------------------------


def classifier(ctx: StepContext) -> TextClassifier:
    """The champion, loaded once per process; an unloadable model is a 503, not a crash."""
    try:
        return ctx.classifier()
    except (OSError, ValueError, DocflowError) as exc:  # ModelNotFoundError, ModelIncompatibleError, config
        from docflow.observability import logger

        logger.error("classifier unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        raise ApiError(503, "model_unavailable", "the classifier model is not available on this server") from exc


def _is_confident(prediction: Prediction, model: TextClassifier, ctx: StepContext) -> bool:
    # The pipeline's own rule: below the review threshold (the settings', else the predicting model's) a
    # document NEEDS_REVIEW.
    return model.review(prediction, ctx.settings.review_threshold) is None


def _prediction_response(prediction: Prediction, is_confident: bool, all_scores: bool) -> dict[str, Any]:
    return {
        "success": True,
        "predicted_class": prediction.predicted_class,
        "confidence_score": prediction.confidence,
        "is_confident": is_confident,
        "model_name": prediction.model_name,
        "model_version": prediction.model_version,
        "all_scores": prediction.scores if all_scores else None,
        "processing_time": round(prediction.seconds, 6),
    }


def predict_text(ctx: StepContext, text: str, return_all_scores: bool) -> PredictionResponse:
    model = classifier(ctx)
    prediction = model.predict(text)
    telemetry.prediction(prediction.predicted_class, prediction.confidence, prediction.model_version)
    return PredictionResponse(
        **_prediction_response(prediction, _is_confident(prediction, model, ctx), return_all_scores)
    )


def model_info(ctx: StepContext) -> ModelInfo:
    model = classifier(ctx)
    try:
        raw = model.metrics
    except ValueError:  # an unreadable metrics.json does not stop the model from serving
        raw = None
    metrics = None
    if isinstance(raw, dict):
        per_class = {
            name: ClassMetrics.model_validate(values)
            for name, values in (raw.get("per_class") or {}).items()
            if isinstance(values, dict)
        }
        metrics = ModelMetrics.model_validate({**raw, "per_class": per_class})
    head = model.scan_head
    scan_head = None
    if head is not None:
        extra = head.spec.model_extra or {}
        scan_head = ScanHeadInfo(
            review_threshold=ctx.settings.review_threshold
            if ctx.settings.review_threshold is not None
            else head.review_threshold,
            uncalibrated=list(head.spec.uncalibrated),
            fitted_on_scans=(extra.get("fitted_on") or {}).get("scans"),
            cross_validated=extra.get("cross_validated"),
        )
    return ModelInfo(
        model_name=model.name,
        model_version=model.version,
        classes=list(model.labels),
        review_threshold=model.review_threshold(ctx.settings.review_threshold),
        created_at=model.config.created_at,
        metrics=metrics,
        scan_head=scan_head,
    )


def health(ctx: StepContext) -> HealthResponse:
    """Liveness, the model version loaded, and whether each store answers. Says nothing more (no auth)."""
    model = None
    try:
        model = ctx.classifier()
    except Exception:  # reported as model_loaded=false; the reason is in the log
        from docflow.observability import logger

        logger.exception("health: classifier not loadable")
    records_ok = _reachable(lambda: ctx.records.get_document("0" * 64))
    blobs_ok = _reachable(lambda: ctx.blobs.exists("health/ping"))
    ok = model is not None and records_ok and blobs_ok
    return HealthResponse(
        status="ok" if ok else "degraded",
        backend=ctx.settings.backend,
        model_loaded=model is not None,
        model_name=model.name if model else None,
        model_version=model.version if model else None,
        stores=StoresHealth(records=records_ok, blobs=blobs_ok),
    )


def _reachable(probe: Any) -> bool:
    try:
        probe()
        return True
    except Exception:
        from docflow.observability import logger

        logger.exception("health: store unreachable")
        return False


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
    from docflow.pipeline.rescore import score_again
    from docflow.ports import BlobNotFoundError

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
        **_prediction_response(prediction, rescored.confident, all_scores),
        document_id=document_id,
        status=updated.status,
        reason=updated.reason,
    )


# -- uploads ----------------------------------------------------------------------------------------------


def _check_size(data: bytes, api: ApiSettings) -> None:
    if len(data) > api.api_max_upload_bytes:
        raise ApiError(
            413,
            "payload_too_large",
            f"the file is {len(data):,} bytes; this endpoint takes at most {api.api_max_upload_bytes:,} "
            f"bytes: {UPLOAD_URL_HINT}",
        )


def _sniff(ctx: StepContext, data: bytes) -> Any:
    """The validation report of the pipeline's own Validate (content, not the declared type)."""
    from docflow.domain.validation import validate_document

    if not data:
        raise ApiError(422, "empty_file", "the uploaded file is empty")
    report = validate_document(data, ctx.settings.limits)
    if report.code == RejectionCode.UNSUPPORTED_TYPE:
        raise ApiError(415, "unsupported_media_type", report.reason or "unsupported file type")
    return report


def _busy(exc: Exception) -> ApiError:
    return ApiError(503, "busy", f"not accepting uploads right now ({exc}); retry later", headers={"Retry-After": "10"})


def _hand_over(ctx: StepContext, submitter: Submitter, job: PendingUpload, store: Callable[[], None]) -> None:
    """The RECEIVED upload record first (a poll right after the 202 finds the document), then the bytes (on AWS
    their arrival starts the state machine), then the local workers. A failure on the way marks the upload
    FAILED, so none stays RECEIVED for nothing."""
    try:
        submitter.check_room()  # refused now: nothing stored, no record a client could find after the 503
    except (StoppingError, QueueFullError) as exc:
        raise _busy(exc) from exc
    ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.RECEIVED))
    try:
        store()
        submitter.accept(job)
    except (StoppingError, QueueFullError) as exc:  # filled up in between: the upload is FAILED, never RECEIVED
        ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.FAILED))
        raise _busy(exc) from exc
    except Exception:
        ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.FAILED))
        raise


def accept_upload(
    ctx: StepContext, api: ApiSettings, submitter: Submitter, file_name: str | None, data: bytes
) -> DocumentAccepted:
    """Store one upload under incoming/ and hand it to the pipeline; answer before it runs (202).

    Rejections other than an unsupported type (corrupt, encrypted, too many pages) are the pipeline's to
    record: the document ends REJECTED with its reason, as one put in the bucket directly would.
    """
    _check_size(data, api)
    report = _sniff(ctx, data)
    upload_id, key = new_upload_key(file_name)
    job = PendingUpload(
        upload_id=upload_id, document_id=report.document_id, key=key, source=upload_source(ctx.settings, key)
    )
    known = ctx.records.get_document(job.document_id) is not None
    _hand_over(ctx, submitter, job, lambda: ctx.blobs.put(key, data, content_type=report.media_type))
    return DocumentAccepted(
        document_id=job.document_id,
        upload_id=upload_id,
        status=Status.RECEIVED,
        file_name=safe_file_name(file_name),
        size_bytes=len(data),
        media_type=report.media_type,
        already_known=known,
        status_url=f"/documents/{job.document_id}",
    )


def accept_granted_upload(
    ctx: StepContext, submitter: Submitter, grant: UploadGrant, path: Path, document_id: str, size: int
) -> DocumentAccepted:
    """A file PUT to a local upload URL (the local stand-in for an S3 presigned PUT), already on disk."""
    if grant.sha256 and grant.sha256 != document_id:
        raise ApiError(400, "checksum_mismatch", "the uploaded bytes do not match the sha256 the URL was made for")
    upload_id = grant.key.split("/")[1]
    job = PendingUpload(
        upload_id=upload_id, document_id=document_id, key=grant.key, source=upload_source(ctx.settings, grant.key)
    )
    known = ctx.records.get_document(document_id) is not None

    def store() -> None:
        put_file = getattr(ctx.blobs, "put_file", None)  # the local store copies without loading the file
        if put_file is not None:
            put_file(grant.key, path)
        else:
            ctx.blobs.put(grant.key, path.read_bytes())

    _hand_over(ctx, submitter, job, store)
    return DocumentAccepted(
        document_id=document_id,
        upload_id=upload_id,
        status=Status.RECEIVED,
        file_name=grant.key.rsplit("/", 1)[-1],
        size_bytes=size,
        already_known=known,
        status_url=f"/documents/{document_id}",
    )


@lru_cache(maxsize=1)
def _s3_presigner() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(signature_version="s3v4"))


def upload_url(
    ctx: StepContext, api: ApiSettings, request: UploadUrlRequest, base_url: str, secret: bytes
) -> UploadUrlResponse:
    """Where to PUT a large file: an S3 presigned URL on AWS, a signed URL of this server locally. Either
    way the object lands under incoming/ and goes through the pipeline like any other."""
    _, key = new_upload_key(request.file_name)
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=api.api_upload_url_expires)
    headers: dict[str, str] = {}
    if ctx.settings.backend == "aws":
        params: dict[str, Any] = {"Bucket": ctx.settings.documents_bucket, "Key": key}
        if request.sha256:
            checksum = base64.b64encode(bytes.fromhex(request.sha256)).decode()
            params["ChecksumSHA256"] = checksum
            headers["x-amz-checksum-sha256"] = checksum
        url = _s3_presigner().generate_presigned_url(
            "put_object", Params=params, ExpiresIn=api.api_upload_url_expires, HttpMethod="PUT"
        )
    else:
        grant = UploadGrant(key=key, expires=int(expires_at.timestamp()), sha256=request.sha256)
        url = f"{base_url.rstrip('/')}/uploads/{sign_grant(grant, secret)}"
    return UploadUrlResponse(
        url=url,
        headers=headers,
        key=key,
        expires_at=expires_at,
        max_bytes=ctx.settings.max_bytes,
        document_id=request.sha256,
    )


# -- synchronous classification of one file --------------------------------------------------------------

# Bounded: a burst of slow scans queues here instead of starving the server's request threads.
_sync_pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1)), thread_name_prefix="docflow-sync")


def upload_and_predict(
    ctx: StepContext,
    api: ApiSettings,
    file_name: str | None,
    data: bytes,
    languages: str | None,
    return_all_scores: bool,
) -> UploadPredictionResponse:
    """Validate, extract and classify one small file now, within the time budget. Nothing is stored: this is
    the seed's synchronous endpoint; POST /documents is the recorded, asynchronous one."""
    _check_size(data, api)
    report = _sniff(ctx, data)
    if not report.accepted:
        raise ApiError(422, str(report.code).lower(), report.reason or "the document was rejected")
    if (report.pages or 1) > api.api_sync_max_pages:
        raise ApiError(
            413,
            "too_many_pages",
            f"the document has {report.pages} pages; this endpoint classifies at most {api.api_sync_max_pages} "
            "synchronously: use POST /documents",
        )
    model = classifier(ctx)
    options = ctx.settings.ocr
    if languages:
        options = options.model_copy(update={"languages": languages})
    # No page may outlast the request: after the 504 the work cannot be cancelled, only bounded.
    options = options.model_copy(update={"timeout_seconds": min(options.timeout_seconds, api.api_sync_timeout)})

    def work() -> tuple[Any, Prediction, dict[str, float]]:
        from docflow.domain.extraction import extract_text

        started = time.perf_counter()
        extraction = extract_text(data, report.media_type, options, ctx.ocr_engine)
        extracted = time.perf_counter()
        prediction = model.predict(extraction.text, extraction.first_layout)
        timings = {"extract": round(extracted - started, 4), "classify": round(time.perf_counter() - extracted, 4)}
        return extraction, prediction, timings

    future = _sync_pool.submit(work)
    try:
        extraction, prediction, timings = future.result(timeout=api.api_sync_timeout)
    except FutureTimeout:
        future.cancel()
        raise ApiError(
            504, "timeout", f"the document took longer than {api.api_sync_timeout:g} s; use POST /documents"
        ) from None
    except Exception as exc:
        _raise_extraction_error(exc)
        raise
    ocr_pages = [p for p in extraction.pages if p.source == "ocr"]
    if ocr_pages:
        telemetry.ocr_page_seconds(sum(p.seconds for p in ocr_pages), len(ocr_pages))
        if extraction.mean_confidence is not None:
            telemetry.ocr_confidence(extraction.mean_confidence)
    telemetry.prediction(prediction.predicted_class, prediction.confidence, prediction.model_version)
    response = _prediction_response(prediction, _is_confident(prediction, model, ctx), return_all_scores)
    response["processing_time"] = round(sum(timings.values()), 4)
    return UploadPredictionResponse(
        **response,
        document_id=report.document_id,
        file_name=safe_file_name(file_name),
        media_type=report.media_type,
        pages=len(extraction.pages),
        text_source=extraction.text_source,
        ocr_confidence=extraction.mean_confidence,
        text_chars=len(extraction.text),
        timings=timings,
    )


def _raise_extraction_error(exc: Exception) -> None:
    from docflow.domain.extraction import DocumentReadError
    from docflow.domain.ocr import OcrError, OcrLanguageError, OcrTimeoutError

    if isinstance(exc, OcrLanguageError):
        raise ApiError(422, "unsupported_language", str(exc)) from exc
    if isinstance(exc, OcrTimeoutError):
        raise ApiError(504, "timeout", f"{exc}; use POST /documents") from exc
    if isinstance(exc, DocumentReadError):
        raise ApiError(422, "corrupt", str(exc)) from exc
    if isinstance(exc, OcrError):  # Tesseract missing or broken here: the deployment's fault, not the request's
        from docflow.observability import logger

        logger.error("OCR unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        raise ApiError(503, "ocr_unavailable", "OCR is not available on this server") from exc
