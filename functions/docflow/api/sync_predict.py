"""One small file classified now (POST /upload-and-predict): validated, read and classified within the
request's time budget, nothing stored."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from docflow import telemetry
from docflow.api.config import ApiSettings
from docflow.api.errors import ApiError
from docflow.api.schemas import (
    UploadPredictionResponse,
)
from docflow.api.uploads import safe_file_name
from docflow.context import StepContext
from docflow.powertools import logger
from docflow.values import Prediction

if TYPE_CHECKING:
    pass
from docflow.api.serving import classifier, is_confident, prediction_response
from docflow.api.uploads import check_size, sniff

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
    options = ctx.settings.ocr
    if languages:
        options = options.model_copy(update={"languages": languages})
    # No page may outlast the request: after the 504 the work cannot be cancelled, only bounded.
    options = options.model_copy(update={"timeout_seconds": min(options.timeout_seconds, api.api_sync_timeout)})

    def work() -> tuple[Any, Prediction, dict[str, float]]:
        # Imported here: extraction loads Pillow, numpy and pdfium (~245 ms of the API's cold start).
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
    response = prediction_response(prediction, is_confident(prediction, model, ctx), return_all_scores)
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
        raise ApiError(504, "timeout", f"{exc}; use POST /documents") from exc
    if isinstance(exc, DocumentReadError):
        raise ApiError(422, "corrupt", str(exc)) from exc
    if isinstance(exc, OcrError):  # Tesseract missing or broken here: the deployment's fault, not the request's
        logger.error("OCR unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        raise ApiError(503, "ocr_unavailable", "OCR is not available on this server") from exc
