"""One small file classified now (POST /upload-and-predict): validated, read and classified within the
request's time budget, nothing stored."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from docflow.api.config import ApiSettings
from docflow.api.errors import ApiError
from docflow.api.schemas import UploadPredictionResponse
from docflow.api.serving import classifier, prediction_response
from docflow.api.uploads import check_size, safe_file_name, sniff
from docflow.context import StepContext
from docflow.pipeline.compute import (
    Classification,
    classify_text,
    read_text,
    report_ocr_confidence,
    report_ocr_seconds,
    report_prediction,
)
from docflow.powertools import logger
from docflow.values import ExtractionResult

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
    check_size(data, api)
    report = sniff(ctx, data)
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

    def work() -> tuple[ExtractionResult, Classification, dict[str, float]]:
        # ExtractText's and Classify's own work, the stores aside. No page may outlast the request: after the
        # 504 the work cannot be cancelled, only bounded.
        started = time.perf_counter()
        extraction = read_text(ctx, data, report.media_type, languages, max_page_seconds=api.api_sync_timeout)
        extracted = time.perf_counter()
        classification = classify_text(model, extraction, ctx.settings.review_threshold)
        timings = {"extract": round(extracted - started, 4), "classify": round(time.perf_counter() - extracted, 4)}
        return extraction, classification, timings

    future = _sync_pool.submit(work)
    try:
        extraction, (prediction, review), timings = future.result(timeout=api.api_sync_timeout)
    except FutureTimeout:
        future.cancel()
        raise ApiError(
            504, "timeout", f"the document took longer than {api.api_sync_timeout:g} s; use POST /documents"
        ) from None
    except Exception as exc:
        _raise_extraction_error(exc)
        raise
    # The signals the pipeline's steps report, here on the request's thread: none for work past the 504.
    report_ocr_seconds(extraction)
    report_ocr_confidence(extraction)
    report_prediction(prediction)
    # Confident exactly where the pipeline would say CLASSIFIED rather than NEEDS_REVIEW.
    response = prediction_response(prediction, review is None, return_all_scores)
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
    # Imported here, as extract_text is: the engines' error types come with their engines.
    from docflow.domain.extraction import DocumentReadError
    from docflow.domain.ocr import OcrError, OcrLanguageError, OcrTimeoutError

    if isinstance(exc, OcrLanguageError):
        raise ApiError(422, "unsupported_language", str(exc)) from exc
    if isinstance(exc, OcrTimeoutError):
        # its message names the server's own settings: no use to the client
        raise ApiError(504, "timeout", "a page took too long to read synchronously; use POST /documents") from exc
    if isinstance(exc, DocumentReadError):
        raise ApiError(422, "corrupt", str(exc)) from exc
    if isinstance(exc, OcrError):  # Tesseract missing or broken here: the deployment's fault, not the request's
        logger.error("OCR unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        raise ApiError(503, "ocr_unavailable", "OCR is not available on this server") from exc
