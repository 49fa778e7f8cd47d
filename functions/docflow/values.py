"""Typed contracts shared by the domain, the handlers, the embedded runner and the API.

Everything that crosses a step boundary (a Lambda payload, a Step Functions state, a CLI row) is one
of these models, so the local runner and the state machine pass exactly the same JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(StrEnum):
    """Lifecycle of one uploaded object. The last five are terminal: every upload ends in exactly one.
    REVIEWED is a document's alone: a person settled it (from NEEDS_REVIEW) in the review queue."""

    RECEIVED = "RECEIVED"
    PROCESSING = "PROCESSING"
    CLASSIFIED = "CLASSIFIED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    REJECTED = "REJECTED"
    DUPLICATE = "DUPLICATE"
    FAILED = "FAILED"
    REVIEWED = "REVIEWED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {Status.CLASSIFIED, Status.NEEDS_REVIEW, Status.REJECTED, Status.DUPLICATE, Status.FAILED, Status.REVIEWED}
)


class MediaType(StrEnum):
    PDF = "application/pdf"
    PNG = "image/png"
    JPEG = "image/jpeg"
    TIFF = "image/tiff"
    WEBP = "image/webp"
    BMP = "image/bmp"


class RejectionCode(StrEnum):
    """Machine-readable reasons a document is refused before any text extraction."""

    EMPTY = "EMPTY"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_TYPE = "UNSUPPORTED_TYPE"
    CORRUPT = "CORRUPT"
    ENCRYPTED = "ENCRYPTED"
    TOO_MANY_PAGES = "TOO_MANY_PAGES"
    TOO_MANY_PIXELS = "TOO_MANY_PIXELS"
    BAD_DIMENSIONS = "BAD_DIMENSIONS"
    # A PDF content stream (a page's text and drawing instructions) that expands past the limit: PDFium's
    # memory grows ~14x the expanded size to parse it and ~130 bytes per character to extract its text.
    CONTENT_TOO_LARGE = "CONTENT_TOO_LARGE"


class ReviewCode(StrEnum):
    """Why a document was sent to a person (NEEDS_REVIEW) instead of being classified."""

    NO_TEXT = "NO_TEXT"  # nothing could be read from it
    OUT_OF_SCOPE = "OUT_OF_SCOPE"  # it looks like none of the model's classes (the scan head says so)
    LOW_CONFIDENCE = "LOW_CONFIDENCE"  # its best class scored below the review threshold


class ValidationLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_pages: int = Field(default=500, gt=0)
    # Decompression-bomb guard, checked from headers before any pixel is decoded.
    max_pixels_per_page: int = Field(default=100_000_000, gt=0)
    max_dimension: int = Field(default=20_000, gt=0)
    min_dimension: int = Field(default=16, gt=0)
    # PDF pages are checked against the two limits above at the resolution they will be rendered at for OCR.
    render_dpi: int = Field(default=200, gt=0)
    # PDF content-stream budget (decompressed bytes), measured before PDFium parses any page: one stream
    # (dense text is ~1 byte per character: 4 MiB keeps text extraction of a page well under 1 GiB) and all
    # of them together.
    max_content_stream_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_content_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    # What one page draws, all its content streams together. PDFium's text extraction of a page costs ~100
    # bytes of memory per byte of its content (measured, one page of dense text: 1 MB -> 270 MB peak RSS of
    # `docflow process`, 2 MB -> 370 MB, 3 MB -> 565 MB, with ~170 MB of imports, model and Tesseract): 2 MiB
    # keeps every accepted page under 512 MiB. A dense printed page draws 5-50 KB.
    max_page_content_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    # Memory that decoding one image page takes, estimated from its header (Pillow: 1 byte a pixel for grey,
    # bilevel and palette, 2 for 16-bit grey, 4 for colour or alpha; WebP ~15, as Pillow's decoder keeps
    # libwebp's canvases beside its own; a progressive JPEG 2 bytes per DCT coefficient). PNG, TIFF, WebP, BMP
    # and progressive JPEG pages are decoded whole before they are downscaled for OCR, so this bounds them:
    # with ~80 MB of imports and the page read at raster.MAX_OCR_PIXELS beside it, 200 MiB keeps `docflow
    # process` under 512 MiB (measured: a 100 Mpx RGB PNG, 400 MB decoded, peaked at 544 MB). It lets through
    # grey pages up to max_pixels_per_page and colour ones up to 52 Mpx (an A4 page at 600 dpi is 35 Mpx);
    # a baseline JPEG is decoded at reduced DCT scale, so max_pixels_per_page alone bounds it.
    max_decoded_bytes_per_page: int = Field(default=200 * 1024 * 1024, gt=0)


class ValidationReport(BaseModel):
    """What validation learned about the bytes. `accepted` is False iff `code` is set."""

    document_id: str  # sha256 hex of the content
    size_bytes: int
    media_type: MediaType | None = None
    pages: int | None = None
    accepted: bool
    code: RejectionCode | None = None
    reason: str | None = None


TextSource = Literal["pdf_text", "ocr"]


class OcrOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    languages: str = "eng"  # tesseract syntax, e.g. "eng+rus"
    psm: int = 3
    # Scans below this height (≈ 100-150 dpi letter pages) are upscaled before OCR (Lanczos), towards
    # upscale_target_height (a letter page at ≈ 270 dpi: Tesseract reads best near 300 dpi), by at most
    # upscale_factor. 2x by default (a 1000-px RVL-CDIP scan becomes 2000 px). 3x (DOCFLOW_OCR_UPSCALE_FACTOR)
    # reads such scans a little better: on 459 scans (50 FUNSD forms, 9 RVL samples, 400 rendered held-out
    # pages) the class came out right where 2x was wrong 9 times and the reverse 3 times (FUNSD 40 -> 42 of
    # 50). But `docflow process` drops from 1.96 to 1.12 pages/s on the 36 real scans of bench/throughput.py
    # (3.2x -> 1.8x raw tesseract, the edge of issue 8's target), so it is an option, not the default.
    upscale_below_height: int = 1800
    upscale_target_height: int = 3000
    upscale_factor: float = 2.0
    # A page read with a mean word confidence under this (0-100; 0: never) has its orientation checked
    # (Tesseract OSD) and, when it is confidently turned by 90/180/270 degrees, is read again upright;
    # the more confident reading is kept. On 76 real scans (RVL-CDIP, FUNSD, SROIE) upright pages read at
    # 22-94 (3 under 50), pages turned sideways or upside down at 14-46 (one 12-word page at 75).
    orientation_check_below: float = 50.0
    # OSD's orientation confidence needed to turn a page (upright pages it got wrong: 0.2-1.5).
    orientation_min_confidence: float = 2.0
    render_dpi: int = 200  # PDF pages without a text layer are rendered at this resolution
    min_text_layer_chars: int = 20  # fewer real characters than this on a PDF page: treat as scanned
    timeout_seconds: float = 120.0  # per page


class PageText(BaseModel):
    page: int  # 1-based
    text: str
    source: TextSource
    confidence: float | None = None  # mean word confidence 0..100 (OCR only)
    words: int
    seconds: float
    rotated: int = 0  # degrees the page was turned (counter-clockwise) to be read upright (OCR only)
    # What the page looks like (docflow.domain.layout.FEATURE_NAMES, definition LAYOUT_VERSION): from the OCR's
    # word boxes and the page image. None for a page read from a PDF's text layer.
    layout: dict[str, float] | None = None
    layout_version: str | None = None


class ExtractionResult(BaseModel):
    pages: list[PageText]

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages)

    @property
    def text_source(self) -> str:
        sources = {p.source for p in self.pages}
        return sources.pop() if len(sources) == 1 else ("mixed" if sources else "none")

    @property
    def mean_confidence(self) -> float | None:
        confs = [p.confidence for p in self.pages if p.confidence is not None]
        return sum(confs) / len(confs) if confs else None

    @property
    def first_layout(self) -> tuple[dict[str, float], str] | None:
        """The layout of the first page that has one, with its definition's version: a document's type shows
        on its first page (a letter's letterhead, a memo's header block, a report's cover)."""
        for page in self.pages:
            if page.layout is not None and page.layout_version is not None:
                return page.layout, page.layout_version
        return None


class Prediction(BaseModel):
    predicted_class: str
    confidence: float
    scores: dict[str, float]
    model_name: str
    model_version: str
    seconds: float = 0.0
    # Set by a model with a scan head (docflow.domain.scan_head) on a page with a layout: how likely the page is
    # none of the model's classes. The scores are then the classes' given that it is one of them, and
    # ``confidence`` is the predicted class's score times (1 - out_of_scope).
    out_of_scope: float | None = None
