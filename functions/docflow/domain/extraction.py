"""ExtractText: text of a PDF or image, page by page — the PDF text layer where there is one, OCR otherwise.

One page image is in memory at a time: PDF pages are rendered one by one and closed, image frames are
decoded one by one. A PDF page with a real text layer is never rendered nor OCR'd.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from functools import lru_cache

import pypdfium2 as pdfium
from PIL import Image

from docflow.domain.layout import LAYOUT_VERSION, page_layout
from docflow.domain.ocr import (
    OcrEngine,
    OcrPage,
    OcrTimeoutError,
    Orientation,
    TesseractEngine,
    TesserocrEngine,
)
from docflow.domain.pdfium_lock import PDFIUM_LOCK
from docflow.domain.raster import (
    EXIF_ORIENTATION,
    MAX_OCR_PIXELS,
    mmap_large_buffers,
    ocr_frame,
    prepare_for_ocr,
    to_ocr_mode,
    turned_upright,
    upscale_factor,
)
from docflow.values import ExtractionResult, MediaType, OcrOptions, PageText

logger = logging.getLogger(__name__)

__all__ = [
    "EXIF_ORIENTATION",
    "MAX_OCR_PIXELS",
    "MAX_RENDER_PIXELS",
    "DocumentReadError",
    "ExtractionError",
    "PageRangeError",
    "default_engine",
    "extract_text",
    "has_text_layer",
    "meaningful_chars",
    "prepare_for_ocr",
    "recognize_upright",
    "resolve_page_range",
    "should_check_orientation",
    "to_ocr_mode",
    "turn_for",
    "turned_upright",
    "upscale_factor",
]

# A PDF page whose render at render_dpi would exceed this is rendered at a lower resolution: the same budget
# as an image frame (raster.MAX_OCR_PIXELS; a 200-dpi A4/letter page is ~3.7 Mpx, an A0 poster is read at
# ~70 dpi), which keeps the largest page validation accepts (100 Mpx at render_dpi) under 512 MiB.
MAX_RENDER_PIXELS = MAX_OCR_PIXELS


class ExtractionError(ValueError):
    """The document cannot be extracted as asked (the input is at fault, retrying will not help)."""


class PageRangeError(ExtractionError):
    """first_page/last_page do not describe pages of this document."""


class DocumentReadError(ExtractionError):
    """The bytes could not be opened as the declared media type."""


@lru_cache(maxsize=1)
def default_engine() -> OcrEngine:
    """In-process libtesseract (tesserocr) when installed, else the tesseract command line."""
    try:
        # Only a probe: tesserocr is optional, and this says which engine this machine can run.
        import tesserocr  # noqa: F401
    except ImportError:
        return TesseractEngine()
    return TesserocrEngine()


def extract_text(
    data: bytes,
    media_type: MediaType,
    options: OcrOptions,
    engine: OcrEngine | None = None,
    first_page: int = 1,
    last_page: int | None = None,
) -> ExtractionResult:
    """Text of pages first_page..last_page (1-based, inclusive; None = to the end) of a PDF or image.

    PDF pages with at least `options.min_text_layer_chars` meaningful characters in their text layer
    use it (source "pdf_text"); other pages are rendered at `options.render_dpi` and OCR'd (source "ocr").
    Every frame of an image (multi-page TIFF, ...) is OCR'd, upscaled first when it is a low-resolution
    scan (height < `options.upscale_below_height`; see `upscale_factor`).

    Raises PageRangeError, DocumentReadError, and docflow.domain.ocr.OcrError from the engine.
    """
    media_type = MediaType(media_type)
    mmap_large_buffers()  # page-sized buffers go back to the system when freed (see raster)
    if media_type is MediaType.PDF:
        pages = list(_pdf_pages(data, options, engine, first_page, last_page))
    else:
        pages = list(_image_pages(data, media_type, options, engine, first_page, last_page))
    return ExtractionResult(pages=pages)


# -- pure decisions (unit-tested without Tesseract) -----------------------------------------------------


def resolve_page_range(first_page: int, last_page: int | None, page_count: int) -> range:
    """0-based indices for the 1-based inclusive range [first_page, last_page]; PageRangeError if invalid."""
    if isinstance(first_page, bool) or not isinstance(first_page, int):
        raise PageRangeError(f"first_page must be an int, got {first_page!r}")
    if last_page is not None and (isinstance(last_page, bool) or not isinstance(last_page, int)):
        raise PageRangeError(f"last_page must be an int or None, got {last_page!r}")
    if page_count < 1:
        raise PageRangeError("the document has no pages")
    last = page_count if last_page is None else last_page
    if first_page < 1:
        raise PageRangeError(f"first_page must be >= 1, got {first_page}")
    if last < first_page:
        raise PageRangeError(f"last_page {last} is before first_page {first_page}")
    if last > page_count:
        raise PageRangeError(f"page range {first_page}-{last} exceeds the document's {page_count} pages")
    return range(first_page - 1, last)


def meaningful_chars(text: str) -> int:
    """Characters that carry text: not whitespace, not control characters, not U+FFFD (unmapped glyphs)."""
    return sum(1 for ch in text if not ch.isspace() and ch.isprintable() and ch != "\ufffd")


def has_text_layer(text: str, min_chars: int) -> bool:
    return meaningful_chars(text) >= max(min_chars, 1)


# Counter-clockwise turns, exact (no resampling).
_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def should_check_orientation(page: OcrPage, options: OcrOptions) -> bool:
    """A page read poorly may be sideways or upside down: worth asking which way up it is."""
    below = options.orientation_check_below
    return below > 0 and (page.confidence is None or page.confidence < below)


def turn_for(orientation: Orientation | None, options: OcrOptions) -> int:
    """Degrees (counter-clockwise) to turn the page before reading it again; 0: leave it."""
    if orientation is None or orientation.degrees not in _TURNS:
        return 0
    return orientation.degrees if orientation.confidence >= options.orientation_min_confidence else 0


def recognize_upright(engine: OcrEngine, image: Image.Image, options: OcrOptions) -> tuple[OcrPage, int]:
    """OCR a page; when it reads poorly (``should_check_orientation``), ask the engine which way up it is
    and, if it is confidently turned, read it again upright and keep the more confident reading.

    Returns the reading and the degrees the page was turned (0 when read as it came). Upright pages
    that read well cost nothing extra; the others one OSD pass (~0.4 s on a 2000-px page) and, when
    turned, a second reading. All of it stays within the page's ``timeout_seconds``: the check gets
    what the first reading left, and a second reading that runs out of it leaves the first one.
    """
    deadline = time.monotonic() + options.timeout_seconds
    page = engine.recognize(image, options)
    if not should_check_orientation(page, options):
        return page, 0
    degrees = turn_for(engine.detect_orientation(image, _until(deadline, options)), options)
    left = deadline - time.monotonic()
    if not degrees or left < 1.0:
        return page, 0
    turned = image.transpose(_TURNS[degrees])
    try:
        again = engine.recognize(turned, _until(deadline, options))
    except OcrTimeoutError:
        return page, 0
    finally:
        turned.close()
    if (again.confidence or 0.0) > (page.confidence or 0.0):
        return again, degrees
    return page, 0


def layout_of(image: Image.Image, page: OcrPage, rotated: int) -> dict[str, float] | None:
    """The page's layout features from the reading kept and the image it was read from; None when the engine
    gave no word boxes. A page whose layout cannot be computed is still classified by its text."""
    if not page.tsv:
        return None
    try:
        return page_layout(image, page.tsv, rotated)
    except Exception:  # numbers about the page must never cost the page its text
        logger.warning("layout features failed on a %dx%d page", image.width, image.height, exc_info=True)
        return None


def _ocr_page(page: int, image: Image.Image, options: OcrOptions, engine: OcrEngine | None, started: float) -> PageText:
    """A page image prepared for OCR, read upright (turned when it was scanned sideways) with its layout: what
    a scanned PDF page and an image frame both become."""
    ocr, rotated = recognize_upright(engine or default_engine(), image, options)
    layout = layout_of(image, ocr, rotated)
    return PageText(
        page=page,
        text=ocr.text,
        source="ocr",
        confidence=ocr.confidence,
        words=ocr.words,
        seconds=time.perf_counter() - started,
        rotated=rotated,
        layout=layout,
        layout_version=LAYOUT_VERSION if layout is not None else None,
    )


def _until(deadline: float, options: OcrOptions) -> OcrOptions:
    """The options with the page's time limit cut to what is left before ``deadline``."""
    return options.model_copy(update={"timeout_seconds": max(0.1, deadline - time.monotonic())})


# -- PDF ------------------------------------------------------------------------------------------------


def _pdf_pages(
    data: bytes, options: OcrOptions, engine: OcrEngine | None, first_page: int, last_page: int | None
) -> Iterator[PageText]:
    # Every PDFium call holds PDFIUM_LOCK (not thread-safe); Tesseract reads a rendered page outside it.
    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise DocumentReadError(f"cannot open the PDF: {exc}") from exc
        count = len(pdf)
    try:
        for index in resolve_page_range(first_page, last_page, count):
            started = time.perf_counter()
            layer, rendered = _read_pdf_page(pdf, index, options)
            if layer is not None:
                yield PageText(
                    page=index + 1,
                    text=layer,
                    source="pdf_text",
                    confidence=None,
                    words=len(layer.split()),
                    seconds=time.perf_counter() - started,
                )
                continue
            assert rendered is not None
            try:
                # Rendered at a known resolution: no upscale (page height says nothing about dpi here).
                image = prepare_for_ocr(rendered, options, allow_upscale=False)
                page = _ocr_page(index + 1, image, options, engine, started)
            finally:
                rendered.close()
            yield page
    finally:
        with PDFIUM_LOCK:
            pdf.close()


def _read_pdf_page(pdf: pdfium.PdfDocument, index: int, options: OcrOptions) -> tuple[str | None, Image.Image | None]:
    """Under PDFIUM_LOCK: the page's text layer when it has one, else the page rendered for OCR (a copy that
    owns its pixels, so that no PDFium buffer outlives the lock)."""
    with PDFIUM_LOCK:
        page = pdf[index]
        try:
            textpage = page.get_textpage()
            try:
                layer = textpage.get_text_range()
            finally:
                textpage.close()
            if has_text_layer(layer, options.min_text_layer_chars):
                return _clean_layer_text(layer), None
            width_pt, height_pt = page.get_size()
            scale = options.render_dpi / 72.0
            pixels = width_pt * height_pt * scale * scale
            if pixels > MAX_RENDER_PIXELS:
                scale *= (MAX_RENDER_PIXELS / pixels) ** 0.5
            bitmap = page.render(scale=scale)
            try:
                image = bitmap.to_pil()
                # PIL converts a BGR bitmap into pixels of its own; only a same-layout one shares PDFium's buffer.
                return None, image.copy() if bitmap.mode == image.mode else image
            finally:
                bitmap.close()
        finally:
            page.close()


def _clean_layer_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


# -- images ---------------------------------------------------------------------------------------------

_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _image_pages(
    data: bytes,
    media_type: MediaType,
    options: OcrOptions,
    engine: OcrEngine | None,
    first_page: int,
    last_page: int | None,
) -> Iterator[PageText]:
    try:
        source = Image.open(io.BytesIO(data))
    except _PIL_ERRORS as exc:  # PIL raises UnidentifiedImageError (an OSError) for unknown bytes
        raise DocumentReadError(f"cannot open the image: {exc}") from exc
    with source:
        # A JPEG's extra frames (MPO: previews, depth maps from phone cameras) are not pages.
        frames = 1 if media_type is MediaType.JPEG else getattr(source, "n_frames", 1)
        for index in resolve_page_range(first_page, last_page, frames):
            started = time.perf_counter()
            try:
                source.seek(index)
                # Decoded within MAX_OCR_PIXELS, converted, upright; the frame's full-size pixels are let go.
                image = prepare_for_ocr(ocr_frame(source), options)
            except _PIL_ERRORS as exc:
                raise DocumentReadError(f"cannot decode frame {index + 1}: {exc}") from exc
            try:
                page = _ocr_page(index + 1, image, options, engine, started)
            finally:
                image.close()
            yield page
