"""PDF inspection for the Validate step: the document opened by PDFium (under PDFIUM_LOCK) for its page
count and page boxes, each page's rendered size held to the pixel limits at `render_dpi`, the %%EOF marker
that a truncated upload lacks, and a scan of the deflated content streams that refuses a content-stream
bomb before PDFium ever parses a page."""

from __future__ import annotations

import ctypes
import math
import re
import zlib

import pypdfium2  # noqa: F401  (importing the package initialises the PDFium library)
import pypdfium2.raw as pdfium_c

from docflow.domain.pdfium_lock import PDFIUM_LOCK
from docflow.domain.validation.common import INFLATE_STEP, Rejected, check_pixels, corrupt, human_bytes, too_many_pages
from docflow.values import RejectionCode, ValidationLimits

_PDFIUM_ERRORS = {
    pdfium_c.FPDF_ERR_UNKNOWN: "unknown error",
    pdfium_c.FPDF_ERR_FILE: "file access error",
    pdfium_c.FPDF_ERR_FORMAT: "not a valid PDF structure",
    pdfium_c.FPDF_ERR_PAGE: "page not found or content error",
}


def inspect_pdf(data: bytes, limits: ValidationLimits) -> int:
    with PDFIUM_LOCK:  # PDFium is not thread-safe (docflow.domain.pdfium_lock)
        return _inspect_pdf_unlocked(data, limits)


def _inspect_pdf_unlocked(data: bytes, limits: ValidationLimits) -> int:
    # The raw API (rather than PdfDocument) lets us close the handle on every path, including a document
    # that loads with zero pages. PDFium reads `data` in place: it stays referenced until the close.
    pdf = pdfium_c.FPDF_LoadMemDocument64(data, len(data), None)
    if not pdf:
        error = pdfium_c.FPDF_GetLastError()
        if error == pdfium_c.FPDF_ERR_PASSWORD:
            raise Rejected(
                RejectionCode.ENCRYPTED,
                "The PDF is password-protected: it cannot be opened without its password.",
            )
        if error == pdfium_c.FPDF_ERR_SECURITY:
            raise Rejected(RejectionCode.ENCRYPTED, "The PDF is encrypted with an unsupported security handler.")
        raise corrupt(f"Corrupt PDF: it could not be parsed ({_PDFIUM_ERRORS.get(error, 'unknown error')}).")
    try:
        # PDFium silently rebuilds a damaged cross-reference table, so a cut-off upload can open with some
        # pages missing. Every complete PDF ends with %%EOF (Acrobat also looks only at the last 1024
        # bytes); trailing whitespace/NULs that some tools append are tolerated.
        tail = data[-4096:].rstrip(b"\x00\t\n\r\f ")
        if b"%%EOF" not in tail[-1024:]:
            raise corrupt("Truncated PDF: the file does not end with the %%EOF marker, so part of it is missing.")
        # A PDF with only an owner password (permissions such as "no printing/copying") opens without any
        # password; PDFium renders and extracts its text like any other, so it is accepted. Only a PDF that
        # needs a user password to open (the load above failed) is ENCRYPTED.
        count = pdfium_c.FPDF_GetPageCount(pdf)
        if count < 1:
            raise corrupt("Corrupt PDF: the document has no readable pages.")
        if count > limits.max_pages:
            raise too_many_pages(f"{count:,}", limits)
        _check_pdf_content(data, limits, count)
        size = pdfium_c.FS_SIZEF()
        for index in range(count):
            if not pdfium_c.FPDF_GetPageSizeByIndexF(pdf, index, ctypes.byref(size)):
                raise corrupt(f"Corrupt PDF: page {index + 1} could not be read.")
            _check_pdf_page(index + 1, size.width, size.height, limits)
        return count
    finally:
        pdfium_c.FPDF_CloseDocument(pdf)


# `stream` keyword (not `endstream`) and its end-of-line; the stream's dictionary precedes it.
_PDF_STREAM = re.compile(rb"(?<![A-Za-z])stream(?:\r\n|\n|\r)")
_PDF_OBJECT = re.compile(rb"(\d+)\s+\d+\s+obj\b")
# Streams PDFium never parses as page content: images, fonts, attachments, metadata, xref streams.
_PDF_NOT_CONTENT = re.compile(
    rb"/Subtype\s*/(?:Image|Type1C|CIDFontType0C|OpenType)|/Length[123]\b|/Type\s*/(?:EmbeddedFile|Metadata|XRef)"
)
_PDF_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm\b")
_PDF_FLATE = re.compile(rb"/(?:FlateDecode|Fl)\b")
_PDF_CONTENTS = re.compile(rb"/Contents\s*(?:(\d+)\s+\d+\s+R|\[([^\]]{0,65536})\])")
_PDF_REFERENCE = re.compile(rb"(\d+)\s+\d+\s+R")
_PDF_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_PDF_OBJECT_STREAMS_BYTES = 16 << 20  # page dictionaries hidden in compressed object streams: read this much


def _check_pdf_content(data: bytes, limits: ValidationLimits, page_count: int) -> None:
    """Refuse a content-stream bomb before PDFium parses a page.

    PDFium expands a page's content streams whole and builds an object per text run: a 170 KB file whose
    page draws 50 MB of text costs 0.7 GB to load and 6.5 GB to extract, and 500 pages that all draw one
    4 MB stream cost 3 s each. So every deflated stream that may be page content is inflated here, the output
    discarded, and counted once per page that draws it (pages found in the file and in its object streams;
    pages PDFium counts beyond those, such as one page object listed many times, as the largest page).
    Raw (unfiltered) streams are bounded by the file size limit. Not counted: form XObjects a page draws
    through its resources.
    """
    view = memoryview(data)
    sizes: dict[int, int] = {}  # object number -> expanded size, for streams that may be page content
    object_streams: list[bytes] = []
    total = 0
    for match in _PDF_STREAM.finditer(data):
        head = data[max(0, match.start() - 4096) : match.start()]
        headers = list(_PDF_OBJECT.finditer(head))
        dictionary = head[headers[-1].end() :] if headers else head
        if not _PDF_FLATE.search(dictionary):
            continue
        if _PDF_OBJECT_STREAM.search(dictionary):
            budget = _PDF_OBJECT_STREAMS_BYTES - sum(map(len, object_streams))
            if budget > 0:
                object_streams.append(_inflate(view, match.end(), budget, keep=True)[1])
            continue
        if _PDF_NOT_CONTENT.search(dictionary):
            continue
        produced, _ = _inflate(view, match.end(), min(limits.max_content_stream_bytes, limits.max_content_bytes) + 1)
        if produced > limits.max_content_stream_bytes:
            raise Rejected(
                RejectionCode.CONTENT_TOO_LARGE,
                f"A content stream of the PDF (its text and drawing instructions) at byte {match.start():,} expands "
                f"to more than {human_bytes(limits.max_content_stream_bytes)}, the limit per stream.",
            )
        total += produced
        if headers:
            number = int(headers[-1].group(1))
            sizes[number] = max(sizes.get(number, 0), produced)
        if total > limits.max_content_bytes:
            raise _content_too_large(limits)

    weighted, largest, pages_seen = 0, 0, 0
    for text in (data, *object_streams):
        pages_seen += len(_PDF_PAGE_OBJECT.findall(text))
        for contents in _PDF_CONTENTS.finditer(text):
            refs = [contents.group(1)] if contents.group(1) else _PDF_REFERENCE.findall(contents.group(2))
            cost = sum(sizes.get(int(ref), 0) for ref in refs)
            weighted, largest = weighted + cost, max(largest, cost)
    weighted += max(0, page_count - pages_seen) * largest
    if weighted > limits.max_content_bytes:
        raise _content_too_large(limits, shared=True)
    if largest > limits.max_page_content_bytes:  # what extracting one page's text costs (values.py)
        raise Rejected(
            RejectionCode.CONTENT_TOO_LARGE,
            f"A page of the PDF draws content streams (its text and drawing instructions) that expand to "
            f"{human_bytes(largest)}, more than {human_bytes(limits.max_page_content_bytes)}, the limit per page.",
        )


def _content_too_large(limits: ValidationLimits, *, shared: bool = False) -> Rejected:
    counted = ", counting a stream once for every page that draws it," if shared else ""
    return Rejected(
        RejectionCode.CONTENT_TOO_LARGE,
        f"The PDF's content streams (text and drawing instructions) expand to more than "
        f"{human_bytes(limits.max_content_bytes)} in all{counted} the limit per document.",
    )


def _inflate(view: memoryview, start: int, budget: int, *, keep: bool = False) -> tuple[int, bytes]:
    """Inflate the zlib stream at `start`, up to `budget` bytes: (bytes produced, them if `keep`).
    A broken stream counts as what it produced before the error: PDFium judges it (skips or repairs it)."""
    inflater = zlib.decompressobj()
    produced, pos, kept = 0, start, bytearray()
    try:
        while produced < budget and not inflater.eof and pos < len(view):
            pending: bytes | memoryview = view[pos : pos + 65536]
            pos += 65536
            while pending and produced < budget and not inflater.eof:
                out = inflater.decompress(pending, min(budget - produced, INFLATE_STEP))
                produced += len(out)
                if keep:
                    kept += out
                pending = inflater.unconsumed_tail
    except zlib.error:
        pass
    return produced, bytes(kept)


def _check_pdf_page(number: int, width_pt: float, height_pt: float, limits: ValidationLimits) -> None:
    """A page is rendered at `render_dpi` for OCR; the bitmap it would need must pass the image limits."""
    if not (math.isfinite(width_pt) and math.isfinite(height_pt)) or width_pt <= 0 or height_pt <= 0:
        raise Rejected(
            RejectionCode.BAD_DIMENSIONS, f"Page {number} of the PDF has an invalid size ({width_pt} x {height_pt} pt)."
        )
    scale = limits.render_dpi / 72  # PDF user space is 1/72 inch
    width, height = math.ceil(width_pt * scale), math.ceil(height_pt * scale)
    check_pixels(
        width,
        height,
        limits,
        f"PDF page {number} ({width_pt:.0f} x {height_pt:.0f} pt, rendered at {limits.render_dpi} dpi)",
    )
