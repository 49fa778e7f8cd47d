"""What ExtractText and Classify compute, apart from the stores they read and write: a document's text read
with the pipeline's OCR options, its class under the pipeline's review rule, and the signals each reports.

The steps (docflow.pipeline.steps) and POST /upload-and-predict (docflow.api.sync_predict), which classifies
one small file now and stores nothing, both call these, so the two cannot read or decide a document
differently. The signal functions are apart from the work: a step reports after its writes, the endpoint
after its time budget, on its request's thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from docflow import telemetry
from docflow.context import StepContext
from docflow.values import ExtractionResult, MediaType, Prediction, ReviewCode

if TYPE_CHECKING:
    from docflow.domain.classifier import TextClassifier


def read_text(
    ctx: StepContext,
    data: bytes,
    media_type: MediaType | str,
    languages: str | None = None,
    first_page: int = 1,
    last_page: int | None = None,
    max_page_seconds: float | None = None,
) -> ExtractionResult:
    """Text per page of pages first_page..last_page: the PDF's own text layer where it has one, Tesseract
    otherwise, with the settings' OCR options in the document's own languages where it names them.
    ``max_page_seconds`` caps each page's OCR time below the settings' (a request's time budget)."""
    # Imported here: extraction loads Pillow, numpy and pdfium, which Classify's function and the API's
    # cold start do without.
    from docflow.domain.extraction import extract_text

    options = ctx.settings.ocr
    if languages:
        options = options.model_copy(update={"languages": languages})
    if max_page_seconds is not None:
        options = options.model_copy(update={"timeout_seconds": min(options.timeout_seconds, max_page_seconds)})
    return extract_text(data, MediaType(media_type), options, ctx.ocr_engine, first_page, last_page)


def report_ocr_seconds(result: ExtractionResult) -> None:
    """OCR time per page of one read: a document, or one page range of a long PDF."""
    ocr_pages = [p for p in result.pages if p.source == "ocr"]
    if ocr_pages:
        telemetry.ocr_page_seconds(sum(p.seconds for p in ocr_pages), len(ocr_pages))


def report_ocr_confidence(result: ExtractionResult) -> None:
    """The mean OCR word confidence of a whole document's text (its page ranges merged)."""
    if result.mean_confidence is not None:  # OCR ran on at least one page
        telemetry.ocr_confidence(result.mean_confidence)


class Classification(NamedTuple):
    prediction: Prediction
    review: tuple[ReviewCode, str] | None  # why a person must decide (NEEDS_REVIEW); None: the prediction stands


def classify_text(
    model: TextClassifier, extraction: ExtractionResult, review_threshold: float | None
) -> Classification:
    """The document's class from its text and its first page's layout, and whether a person must decide it
    (no text, out of scope, or under the review threshold: ``review_threshold`` is the settings', if any)."""
    prediction = model.predict(extraction.text, extraction.first_layout)
    has_text = bool(extraction.text.strip())
    return Classification(prediction, model.review(prediction, review_threshold, has_text=has_text))


def report_prediction(prediction: Prediction) -> None:
    telemetry.prediction(prediction.predicted_class, prediction.confidence, prediction.model_version)
