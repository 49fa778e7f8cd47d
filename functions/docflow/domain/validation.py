"""The Validate step: decide from the bytes alone whether a document may enter the pipeline.

The type comes from the content (magic bytes), never from a file name or a client's Content-Type. Every
check that can be made from headers (size, type, dimensions, page count) runs before anything is
decoded, so a decompression bomb or a TIFF with a million frames is refused after reading a few bytes.
Only then is the rest of the file verified structurally, so that ExtractText never gets a file it cannot
read: a truncated or corrupt upload ends here as REJECTED/CORRUPT with a reason, not later as FAILED.

What "verified" means per format, chosen so that hostile input stays well under a second and a few MB:

- PDF: opened by PDFium (page count, page boxes; a page must fit the pixel limits at `render_dpi`), %%EOF.
- PNG: every chunk's CRC, IHDR first, IEND last; the zlib image stream inflated (discarding the output)
  up to a budget.
- JPEG: the marker structure up to EOI, then a decode at 1/8 scale (large progressive files excepted).
- TIFF: every page directory read and its strips/tiles located inside the file.
- WebP: RIFF length and libwebp's demuxer. BMP: header and pixel-array length.

`validate_document` never raises: whatever the bytes, it returns a `ValidationReport`.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterator

import pypdfium2  # noqa: F401  (importing the package initialises the PDFium library)
import pypdfium2.raw as pdfium_c
from PIL import BmpImagePlugin, Image, JpegImagePlugin, TiffImagePlugin, WebPImagePlugin

from docflow.domain.pdfium_lock import PDFIUM_LOCK
from docflow.models import MediaType, RejectionCode, ValidationLimits, ValidationReport

__all__ = ["validate_document"]

_ACCEPTED_TYPES = "PDF, PNG, JPEG, TIFF, WebP and BMP"
_FORMAT_NAMES = {
    MediaType.PDF: "PDF",
    MediaType.PNG: "PNG",
    MediaType.JPEG: "JPEG",
    MediaType.TIFF: "TIFF",
    MediaType.WEBP: "WebP",
    MediaType.BMP: "BMP",
}


class _Rejected(Exception):
    """Raised by the format inspectors; turned into a rejection report by `validate_document`."""

    def __init__(self, code: RejectionCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _corrupt(reason: str) -> _Rejected:
    return _Rejected(RejectionCode.CORRUPT, reason)


def validate_document(data: bytes, limits: ValidationLimits) -> ValidationReport:
    """Inspect `data` and say whether it is an acceptable document, and if not, why."""
    document_id = hashlib.sha256(data).hexdigest()
    size = len(data)

    def rejected(code: RejectionCode, reason: str, media_type: MediaType | None = None) -> ValidationReport:
        return ValidationReport(
            document_id=document_id,
            size_bytes=size,
            media_type=media_type,
            accepted=False,
            code=code,
            reason=reason,
        )

    if size == 0:
        return rejected(RejectionCode.EMPTY, "The document is empty (0 bytes).")
    # Checked before any parsing, so an oversized upload costs nothing but the hash.
    if size > limits.max_bytes:
        return rejected(
            RejectionCode.TOO_LARGE,
            f"The document is {_human_bytes(size)} ({size:,} bytes), "
            f"above the limit of {_human_bytes(limits.max_bytes)} ({limits.max_bytes:,} bytes).",
        )

    media_type = _sniff_media_type(data)
    if media_type is None:
        return rejected(RejectionCode.UNSUPPORTED_TYPE, _unsupported_reason(data))

    name = _FORMAT_NAMES[media_type]
    try:
        pages = _INSPECTORS[media_type](data, limits)
    except _Rejected as rejection:
        return rejected(rejection.code, rejection.reason, media_type)
    except Image.DecompressionBombError as exc:
        # Only reachable when our own limit is above Pillow's global one: the image passed our header check
        # but no Pillow-based step (OCR included) could open it, so refuse it here, as a bomb.
        return rejected(
            RejectionCode.TOO_MANY_PIXELS,
            f"The {name} image is too large for the image decoder ({_short(exc)}).",
            media_type,
        )
    except Exception as exc:  # any parser failure on hostile bytes means the file is unusable
        return rejected(
            RejectionCode.CORRUPT, f"Corrupt {name}: the file could not be parsed ({_short(exc)}).", media_type
        )

    return ValidationReport(document_id=document_id, size_bytes=size, media_type=media_type, pages=pages, accepted=True)


# --------------------------------------------------------------------------------------------------
# Type detection
# --------------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_BMP_DIB_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)


def _sniff_media_type(data: bytes) -> MediaType | None:
    if data.startswith(b"\x89PNG"):
        return MediaType.PNG
    if data.startswith(b"\xff\xd8\xff"):
        return MediaType.JPEG
    if data[:4] in _TIFF_SIGNATURES:
        return MediaType.TIFF
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return MediaType.WEBP
    # "BM" alone would match any text starting with those letters; the DIB header size pins it down.
    if data.startswith(b"BM") and len(data) >= 18 and _u32le(data, 14) in _BMP_DIB_HEADER_SIZES:
        return MediaType.BMP
    # PDF readers (Acrobat, PDFium) accept the header anywhere in the first 1024 bytes: some mail
    # gateways and scanners prepend a line. Checked last so binary signatures at offset 0 win; and what
    # comes before the header must be such a line, not another format (a ZIP, an executable, HTML): that
    # is a polyglot, made to be read one way by us and another by the next program.
    at = data.find(b"%PDF-", 0, 1024)
    if at == 0 or (at > 0 and _describe(data[:at]) in _HARMLESS_PDF_PREFIXES):
        return MediaType.PDF
    return None


# What may precede %PDF- (see _sniff_media_type): nothing recognisable, a line of text, mail headers.
_HARMLESS_PDF_PREFIXES = (None, "plain text", "an email message")


def _unsupported_reason(data: bytes) -> str:
    what = _describe(data)
    if what is None:
        return f"Unsupported file type: the content is not a recognised format. Accepted types are {_ACCEPTED_TYPES}."
    at = data.find(b"%PDF-", 0, 1024)
    polyglot = (
        f" It also holds a PDF header at byte {at:,}: a file that is two formats at once is refused." if at > 0 else ""
    )
    return f"Unsupported file type: the content looks like {what}.{polyglot} Accepted types are {_ACCEPTED_TYPES}."


# (prefix, description). Only used to explain a rejection, so a wrong guess costs nothing but wording.
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O universal binary or Java class file"),
    (b"\x00asm", "a WebAssembly module"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x28\xb5\x2f\xfd", "a Zstandard archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Microsoft Office document (DOC/XLS/PPT)"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript document"),
    (b"\xc5\xd0\xd3\xc6", "an EPS (PostScript) image"),
    (b"AT&TFORM", "a DjVu document"),
    (b"8BPS", "a Photoshop image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 image"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"OggS", "an Ogg media file"),
    (b"fLaC", "a FLAC audio file"),
    (b"ID3", "an MP3 audio file"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
)

_ZIP_KINDS: tuple[tuple[bytes, str], ...] = (
    (b"mimetypeapplication/epub+zip", "an EPUB e-book (ZIP archive)"),
    (b"mimetypeapplication/vnd.oasis.opendocument", "an OpenDocument file (ZIP archive)"),
    (b"word/", "a Word document (DOCX, a ZIP archive)"),
    (b"xl/", "an Excel workbook (XLSX, a ZIP archive)"),
    (b"ppt/", "a PowerPoint presentation (PPTX, a ZIP archive)"),
    (b"Documents/1/Pages/", "an XPS document (ZIP archive)"),
)

_SHEBANG_KINDS: tuple[tuple[str, str], ...] = (
    (r"(ba|da|k|z|c|tc|a)?sh|fish", "a shell script"),
    (r"python[0-9.]*", "a Python script"),
    (r"perl[0-9.]*", "a Perl script"),
    (r"ruby[0-9.]*", "a Ruby script"),
    (r"node(js)?", "a JavaScript (Node.js) script"),
    (r"php[0-9.]*", "a PHP script"),
)

_EMAIL_HEADER = re.compile(
    r"(return-path|received|delivered-to|message-id|mime-version|from|subject|date|to):[ \t]", re.IGNORECASE
)


def _describe(data: bytes) -> str | None:
    """A human guess at what the bytes are, with its article ("an HTML document"), or None."""
    for prefix, what in _BINARY_SIGNATURES:
        if data.startswith(prefix):
            return what
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        # Office/ODF/EPUB containers name their parts in the first local header and in the central
        # directory at the end; look at both rather than parsing an untrusted archive.
        window = data[:4096] + data[-65536:]
        return next((what for marker, what in _ZIP_KINDS if marker in window), "a ZIP archive")
    if data.startswith(b"RIFF") and len(data) >= 12:
        return {b"WAVE": "a WAV audio file", b"AVI ": "an AVI video"}.get(data[8:12], "a RIFF media file")
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "a HEIC/HEIF image"
        if brand in (b"avif", b"avis"):
            return "an AVIF image"
        return "an MP4/QuickTime video"
    if data[257:262] == b"ustar":
        return "a tar archive"
    text = _as_text(data)
    if text is None:
        return None
    return _describe_text(text, data)


def _as_text(data: bytes) -> str | None:
    """The first few KiB decoded as text, or None if they look binary."""
    sample = data[:4096]
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return sample[: len(sample) // 2 * 2].decode("utf-16")
        except UnicodeDecodeError:
            return None
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the sample boundary is still text; anything else is not UTF-8.
        if len(sample) == 4096 and exc.start >= len(sample) - 3:
            text = sample[: exc.start].decode("utf-8", errors="replace")
        else:
            text = sample.decode("latin-1")  # legacy 8-bit text; judged by its control characters below
    if not text:
        return None
    controls = sum(1 for ch in text if (ord(ch) < 32 and ch not in "\t\n\r\f\v") or ch == "\x7f")
    return text if controls <= len(text) // 100 else None


def _describe_text(text: str, data: bytes) -> str:
    head = text.lstrip("\ufeff \t\r\n")
    lower = head[:1024].lower()
    if head.startswith("#!"):
        return _describe_shebang(head.split("\n", 1)[0])
    if lower.startswith("<?xml"):
        if "<svg" in lower:
            return "an SVG image"
        if "<html" in lower:
            return "an XHTML document"
        return "an XML document"
    if lower.startswith(("<!doctype html", "<html", "<head", "<body")) or (lower.startswith("<") and "<html" in lower):
        return "an HTML document"
    if lower.startswith("<svg"):
        return "an SVG image"
    if head.startswith(("{", "[")) and data[-64:].rstrip().endswith((b"}", b"]")):
        return "a JSON document"
    if _EMAIL_HEADER.match(head) or head.startswith("From "):
        return "an email message"
    return "plain text"


def _describe_shebang(line: str) -> str:
    parts = line[2:].split()
    if not parts:
        return "a script"
    interpreter = parts[0].rsplit("/", 1)[-1]
    if interpreter == "env" and len(parts) > 1:
        interpreter = next((p for p in parts[1:] if not p.startswith("-")), interpreter)
    for pattern, what in _SHEBANG_KINDS:
        if re.fullmatch(pattern, interpreter):
            return what
    return f"a script (interpreter {interpreter[:40]!r})"


# --------------------------------------------------------------------------------------------------
# Limits shared by all formats
# --------------------------------------------------------------------------------------------------


def _check_pixels(width: int, height: int, limits: ValidationLimits, what: str) -> None:
    """Refuse a page whose size, as declared by its header, is a bomb or an unusable shape."""
    # Pixels first: a 50000x50000 bomb is a bomb, whichever side also breaks the dimension limit.
    pixels = width * height
    if pixels > limits.max_pixels_per_page:
        raise _Rejected(
            RejectionCode.TOO_MANY_PIXELS,
            f"The {what} is {width}x{height} pixels ({pixels:,} pixels), "
            f"above the limit of {limits.max_pixels_per_page:,} pixels per page.",
        )
    if max(width, height) > limits.max_dimension or min(width, height) < limits.min_dimension:
        raise _Rejected(
            RejectionCode.BAD_DIMENSIONS,
            f"The {what} is {width}x{height} pixels; each side must be between "
            f"{limits.min_dimension:,} and {limits.max_dimension:,} pixels.",
        )


def _too_many_pages(count: str, limits: ValidationLimits) -> _Rejected:
    return _Rejected(
        RejectionCode.TOO_MANY_PAGES,
        f"The document has {count} pages, above the limit of {limits.max_pages:,}.",
    )


# --------------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------------

_PDFIUM_ERRORS = {
    pdfium_c.FPDF_ERR_UNKNOWN: "unknown error",
    pdfium_c.FPDF_ERR_FILE: "file access error",
    pdfium_c.FPDF_ERR_FORMAT: "not a valid PDF structure",
    pdfium_c.FPDF_ERR_PAGE: "page not found or content error",
}


def _inspect_pdf(data: bytes, limits: ValidationLimits) -> int:
    with PDFIUM_LOCK:  # PDFium is not thread-safe (docflow.domain.pdfium_lock)
        return _inspect_pdf_unlocked(data, limits)


def _inspect_pdf_unlocked(data: bytes, limits: ValidationLimits) -> int:
    # The raw API (rather than PdfDocument) lets us close the handle on every path, including a document
    # that loads with zero pages. PDFium reads `data` in place: it stays referenced until the close.
    pdf = pdfium_c.FPDF_LoadMemDocument64(data, len(data), None)
    if not pdf:
        error = pdfium_c.FPDF_GetLastError()
        if error == pdfium_c.FPDF_ERR_PASSWORD:
            raise _Rejected(
                RejectionCode.ENCRYPTED,
                "The PDF is password-protected: it cannot be opened without its password.",
            )
        if error == pdfium_c.FPDF_ERR_SECURITY:
            raise _Rejected(RejectionCode.ENCRYPTED, "The PDF is encrypted with an unsupported security handler.")
        raise _corrupt(f"Corrupt PDF: it could not be parsed ({_PDFIUM_ERRORS.get(error, 'unknown error')}).")
    try:
        # PDFium silently rebuilds a damaged cross-reference table, so a cut-off upload can open with some
        # pages missing. Every complete PDF ends with %%EOF (Acrobat also looks only at the last 1024
        # bytes); trailing whitespace/NULs that some tools append are tolerated.
        tail = data[-4096:].rstrip(b"\x00\t\n\r\f ")
        if b"%%EOF" not in tail[-1024:]:
            raise _corrupt("Truncated PDF: the file does not end with the %%EOF marker, so part of it is missing.")
        # A PDF with only an owner password (permissions such as "no printing/copying") opens without any
        # password; PDFium renders and extracts its text like any other, so it is accepted. Only a PDF that
        # needs a user password to open (the load above failed) is ENCRYPTED.
        count = pdfium_c.FPDF_GetPageCount(pdf)
        if count < 1:
            raise _corrupt("Corrupt PDF: the document has no readable pages.")
        if count > limits.max_pages:
            raise _too_many_pages(f"{count:,}", limits)
        _check_pdf_content(data, limits, count)
        size = pdfium_c.FS_SIZEF()
        for index in range(count):
            if not pdfium_c.FPDF_GetPageSizeByIndexF(pdf, index, ctypes.byref(size)):
                raise _corrupt(f"Corrupt PDF: page {index + 1} could not be read.")
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
            raise _Rejected(
                RejectionCode.CONTENT_TOO_LARGE,
                f"A content stream of the PDF (its text and drawing instructions) at byte {match.start():,} expands "
                f"to more than {_human_bytes(limits.max_content_stream_bytes)}, the limit per stream.",
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


def _content_too_large(limits: ValidationLimits, *, shared: bool = False) -> _Rejected:
    counted = ", counting a stream once for every page that draws it," if shared else ""
    return _Rejected(
        RejectionCode.CONTENT_TOO_LARGE,
        f"The PDF's content streams (text and drawing instructions) expand to more than "
        f"{_human_bytes(limits.max_content_bytes)} in all{counted} the limit per document.",
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
                out = inflater.decompress(pending, min(budget - produced, _INFLATE_STEP))
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
        raise _Rejected(
            RejectionCode.BAD_DIMENSIONS, f"Page {number} of the PDF has an invalid size ({width_pt} x {height_pt} pt)."
        )
    scale = limits.render_dpi / 72  # PDF user space is 1/72 inch
    width, height = math.ceil(width_pt * scale), math.ceil(height_pt * scale)
    _check_pixels(
        width,
        height,
        limits,
        f"PDF page {number} ({width_pt:.0f} x {height_pt:.0f} pt, rendered at {limits.render_dpi} dpi)",
    )


# --------------------------------------------------------------------------------------------------
# PNG: headers and chunk structure are checked by hand; pixels are never materialised.
# --------------------------------------------------------------------------------------------------

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20  # decompressed bytes per zlib call: keeps memory flat whatever the image size
# Inflating runs at only ~150 MB/s on a maximally compressed stream, so a legal but huge image would cost
# seconds; beyond this many decompressed bytes (a whole 300 dpi A4 greyscale scan) the chunk CRCs alone
# vouch for the rest, and the first bytes still prove the stream is real zlib image data.
_PNG_VERIFY_BYTES = 32 << 20


def _inspect_png(data: bytes, limits: ValidationLimits) -> int:
    if not data.startswith(_PNG_SIGNATURE):
        raise _corrupt("Corrupt PNG: the 8-byte PNG signature is damaged or cut off.")
    chunks = _png_chunks(data)
    kind, ihdr = next(chunks)
    if kind != b"IHDR" or len(ihdr) != 13:
        raise _corrupt("Corrupt PNG: the file does not start with a valid IHDR header chunk.")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr)
    _check_pixels(width, height, limits, "PNG image")
    if depth not in _PNG_BIT_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise _corrupt(
            f"Corrupt PNG: invalid header (bit depth {depth}, colour type {colour}, "
            f"compression {compression}, filter {filtering}, interlace {interlace})."
        )

    # Inflate the image data without keeping it, and stop once the declared image is complete (or the
    # verification budget is spent): this finds a broken or short zlib stream, which the chunk CRCs cannot,
    # at constant memory, and a zlib bomb costs no more than the budget.
    expected = _png_raw_size(width, height, _PNG_CHANNELS[colour] * depth, interlaced=interlace == 1)
    target = min(expected, _PNG_VERIFY_BYTES)
    inflater = zlib.decompressobj()
    produced, has_data = 0, False
    for kind, body in chunks:  # the generator verifies every CRC and stops after IEND
        if kind == b"IDAT":
            has_data = True
            if produced < target and not inflater.eof:
                produced += _inflate_discarding(inflater, body, target - produced)
    if not has_data:
        raise _corrupt("Corrupt PNG: the file has no image data (IDAT chunk).")
    if produced < target:
        if inflater.eof:
            raise _corrupt(
                f"Corrupt PNG: the image data holds {produced:,} bytes, fewer than the {expected:,} "
                f"that a {width}x{height} image needs."
            )
        raise _corrupt("Truncated PNG: the compressed image data stops before the image is complete.")
    return 1


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """Yield (type, body) for each chunk up to IEND, checking lengths and CRCs."""
    view = memoryview(data)
    pos, end = len(_PNG_SIGNATURE), len(data)
    while True:
        if pos + 8 > end:
            raise _corrupt("Truncated PNG: the file ends before the IEND chunk.")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        if not kind.isalpha():
            raise _corrupt(f"Corrupt PNG: invalid chunk type {name!r} at byte {pos:,}.")
        stop = pos + 8 + length + 4
        if length > 0x7FFFFFFF or stop > end:
            raise _corrupt(f"Truncated PNG: the {name} chunk at byte {pos:,} runs past the end of the file.")
        (crc,) = struct.unpack_from(">I", data, stop - 4)
        if zlib.crc32(view[pos + 4 : stop - 4]) != crc:
            raise _corrupt(f"Corrupt PNG: CRC mismatch in the {name} chunk at byte {pos:,}.")
        yield kind, view[pos + 8 : stop - 4]
        if kind == b"IEND":
            return
        pos = stop


def _png_raw_size(width: int, height: int, bits_per_pixel: int, *, interlaced: bool) -> int:
    """Bytes of filtered scanlines (one filter byte per row) the zlib stream must produce."""

    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits_per_pixel + 7) // 8)

    if not interlaced:
        return rows(width, height)
    return sum(
        rows((width - x0 + dx - 1) // dx if width > x0 else 0, (height - y0 + dy - 1) // dy if height > y0 else 0)
        for x0, y0, dx, dy in _ADAM7
    )


def _inflate_discarding(inflater: zlib._Decompress, chunk: memoryview, budget: int) -> int:
    """Feed `chunk` to `inflater`, producing at most `budget` bytes (> 0), and return how many it produced."""
    produced = 0
    pending: bytes | memoryview = chunk
    try:
        while pending and produced < budget and not inflater.eof:
            produced += len(inflater.decompress(pending, min(budget - produced, _INFLATE_STEP)))
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise _corrupt(f"Corrupt PNG: the compressed image data is invalid ({exc}).") from exc
    return produced


# --------------------------------------------------------------------------------------------------
# JPEG: size from the SOF header, a walk over the marker structure, then a decode at 1/8 scale.
# --------------------------------------------------------------------------------------------------

_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Inside entropy-coded data a 0xFF byte is always followed by 0x00 (stuffing) or a restart marker; anything
# else is the next marker. (Fill bytes 0xFF 0xFF are skipped: the match lands on the last 0xFF.)
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# libjpeg's default progressive script has 10 scans and no encoder writes more than a few dozen; every
# scan is a pass over the whole image, so thousands of tiny scans are a known decoding-time attack.
_JPEG_MAX_SCANS = 100
# A progressive JPEG keeps every DCT coefficient of the image in memory while decoding, whatever the output
# scale (2 bytes per pixel and component), and each scan revisits all of them: above this size (a 300 dpi
# A4 page is 8.7 M pixels) the marker walk alone vouches for it, so validation stays fast and small.
_JPEG_PROGRESSIVE_DECODE_PIXELS = 16_000_000


def _inspect_jpeg(data: bytes, limits: ValidationLimits) -> int:
    # The plugin class is used directly instead of Image.open: it parses the markers up to the first scan
    # without Pillow's global MAX_IMAGE_PIXELS check, so our own limit decides.
    with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as image:
        width, height = image.size
        _check_pixels(width, height, limits, "JPEG image")
        progressive, scans = _jpeg_structure(data)
        if scans > _JPEG_MAX_SCANS:
            raise _corrupt(f"Corrupt JPEG: {scans} scans, more than any encoder writes ({_JPEG_MAX_SCANS}).")
        if progressive and width * height > _JPEG_PROGRESSIVE_DECODE_PIXELS:
            return 1
        # DCT scaling still entropy-decodes every byte of the scans, so broken Huffman data is found, with
        # 1/64 of the memory and a fraction of the time of a full decode.
        image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        try:
            # ImageFile.LOAD_TRUNCATED_IMAGES is left at False (never touched here), so a cut-off scan
            # raises instead of being padded with grey.
            image.load()
        except OSError as exc:
            if "truncated" in str(exc):
                raise _corrupt(f"Truncated JPEG: the image data stops early ({_short(exc)}).") from exc
            raise _corrupt(f"Corrupt JPEG: the image could not be decoded ({_short(exc)}).") from exc
    return 1


def _jpeg_structure(data: bytes) -> tuple[bool, int]:
    """Walk the markers from SOI to EOI; return (progressive, number of scans).

    This is what catches a cut-off JPEG even where a decoder would pad it: a complete file has an EOI
    marker after its last scan (bytes after EOI, e.g. camera trailers, are allowed).
    """
    end = len(data)
    pos, progressive, scans = 2, False, 0
    while True:
        if pos + 2 > end:
            raise _corrupt("Truncated JPEG: the file ends before the end-of-image marker.")
        if data[pos] != 0xFF:
            raise _corrupt(f"Corrupt JPEG: expected a marker at byte {pos:,}.")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            if not scans:
                raise _corrupt("Corrupt JPEG: the file ends before any image data.")
            return progressive, scans
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > end:
            raise _corrupt("Truncated JPEG: the file ends inside a marker segment.")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            raise _corrupt(f"Corrupt JPEG: invalid segment length at byte {pos:,}.")
        pos += 2 + length
        if pos > end:
            raise _corrupt("Truncated JPEG: a marker segment runs past the end of the file.")
        if marker in _JPEG_SOF:
            progressive = progressive or marker in _JPEG_PROGRESSIVE_SOF
        elif marker == 0xDA:  # SOS: entropy-coded data follows, up to the next marker
            scans += 1
            found = _JPEG_NEXT_MARKER.search(data, pos)
            if found is None:
                raise _corrupt("Truncated JPEG: the image data stops before the end-of-image marker.")
            pos = found.start()


# --------------------------------------------------------------------------------------------------
# TIFF: every IFD (page) is read and its strips/tiles located; pixels are not decoded, since a
# 500-page TIFF would take far too long and each page is decoded anyway by ExtractText.
# --------------------------------------------------------------------------------------------------

_STRIP_OFFSETS, _STRIP_BYTE_COUNTS, _TILE_OFFSETS, _TILE_BYTE_COUNTS = 273, 279, 324, 325


def _inspect_tiff(data: bytes, limits: ValidationLimits) -> int:
    # A writer that puts the directory after the pixel data (Pillow, libtiff) leaves a cut-off file with a
    # header pointing past its end; say so plainly instead of reporting whatever the parser trips on.
    big = data[2:4] in (b"+\x00", b"\x00+")
    header = 16 if big else 8
    first_ifd = int.from_bytes(data[8:16] if big else data[4:8], "little" if data.startswith(b"II") else "big")
    if len(data) < header or first_ifd + (8 if big else 2) > len(data):
        raise _corrupt("Truncated TIFF: the first page directory lies past the end of the file.")
    if first_ifd < header:
        raise _corrupt(f"Corrupt TIFF: the first page directory offset ({first_ifd}) points into the header.")
    with TiffImagePlugin.TiffImageFile(io.BytesIO(data)) as image:
        pages = 0
        while True:
            if pages:
                try:
                    image.seek(pages)  # reads the next IFD only; Pillow ends a looping IFD chain itself
                except EOFError:
                    break
            pages += 1
            # Stop at the first page over the limit: a TIFF with 100 000 tiny frames costs max_pages IFDs.
            if pages > limits.max_pages:
                raise _too_many_pages(f"more than {limits.max_pages:,}", limits)
            _check_pixels(*image.size, limits, f"TIFF page {pages}")
            _check_tiff_extents(image, pages, len(data))
    return pages


def _check_tiff_extents(image: TiffImagePlugin.TiffImageFile, page: int, size: int) -> None:
    """The page's strips or tiles must lie inside the file: this is what a truncated TIFF gets wrong."""
    tags = image.tag_v2
    offsets = tags.get(_STRIP_OFFSETS) or tags.get(_TILE_OFFSETS)
    counts = tags.get(_STRIP_BYTE_COUNTS) or tags.get(_TILE_BYTE_COUNTS)
    if offsets is None:
        raise _corrupt(f"Corrupt TIFF: page {page} has no image data (no strip or tile offsets).")
    offsets = offsets if isinstance(offsets, tuple) else (offsets,)
    if counts is None:
        counts = (1,) * len(offsets)  # optional for some old writers: at least the first byte must exist
    counts = counts if isinstance(counts, tuple) else (counts,)
    if len(counts) != len(offsets):
        raise _corrupt(f"Corrupt TIFF: page {page} lists {len(offsets)} data blocks but {len(counts)} sizes.")
    if any(offset + count > size for offset, count in zip(offsets, counts, strict=True)):
        raise _corrupt(f"Truncated TIFF: the image data of page {page} runs past the end of the file.")


# --------------------------------------------------------------------------------------------------
# WebP: canvas size from the first chunk, then the container structure; pixels are not decoded.
# --------------------------------------------------------------------------------------------------


def _inspect_webp(data: bytes, limits: ValidationLimits) -> int:
    if len(data) < 30:
        raise _corrupt("Truncated WebP: the file is too short to hold a WebP header.")
    declared = 8 + _u32le(data, 4)
    if len(data) < declared:
        raise _corrupt(f"Truncated WebP: the RIFF header declares {declared:,} bytes but the file has {len(data):,}.")
    width, height = _webp_canvas_size(data)
    _check_pixels(width, height, limits, "WebP image")
    # Opening runs libwebp's demuxer, which checks that every chunk is complete and well-formed. Pixels are
    # not decoded: a 4 KB lossless WebP can expand to 16383x6000 and take seconds and 1.5 GB to decode.
    with WebPImagePlugin.WebPImageFile(io.BytesIO(data)):
        pass
    return 1


def _webp_canvas_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended format: 24-bit canvas width-1 and height-1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: key frame start code, 14-bit sizes
        return _u16le(data, 26) & 0x3FFF, _u16le(data, 28) & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: signature byte, then 14-bit width-1, height-1
        bits = _u32le(data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise _corrupt(f"Corrupt WebP: unrecognised first chunk {chunk.decode('latin-1')!r}.")


# --------------------------------------------------------------------------------------------------
# BMP: size from the DIB header, then the pixel array's extent; pixels are not decoded (a BMP is either
# raw rows, whose length the header fixes, or RLE, which Pillow decodes leniently in pure Python).
# --------------------------------------------------------------------------------------------------

_BMP_RLE = (1, 2)  # BI_RLE8, BI_RLE4
_BMP_FIXED_ROWS = (0, 3, 6)  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS


def _inspect_bmp(data: bytes, limits: ValidationLimits) -> int:
    header_size = _u32le(data, 14)
    if len(data) < 14 + header_size:
        raise _corrupt("Truncated BMP: the file ends inside its header.")
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes, never compressed
        width, height, bits, compression, image_size = _u16le(data, 18), _u16le(data, 20), _u16le(data, 24), 0, 0
    else:
        width, height = struct.unpack_from("<ii", data, 18)
        bits, compression, image_size = struct.unpack_from("<HII", data, 28)
        height = abs(height)  # negative height = rows stored top-down
        if width < 0:
            raise _corrupt(f"Corrupt BMP: negative width {width}.")
    _check_pixels(width, height, limits, "BMP image")

    # Pillow validates the rest of the header (bit depth, bit fields, palette, compression) without decoding.
    with BmpImagePlugin.BmpImageFile(io.BytesIO(data)):
        pass
    pixel_offset = _u32le(data, 10)
    if compression in _BMP_RLE:
        # RLE data has no fixed length, but its size field is mandatory for these compressions.
        if image_size == 0:
            raise _corrupt("Corrupt BMP: run-length-encoded image without its data size.")
        needed = pixel_offset + image_size
    else:
        # Rows are fixed-size and padded to 4 bytes: a cut-off file is visible from the header alone.
        needed = pixel_offset + (width * bits + 31) // 32 * 4 * height
    if needed > len(data):
        raise _corrupt(f"Truncated BMP: the pixel data needs {needed:,} bytes but the file has {len(data):,}.")
    return 1


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------

_INSPECTORS: dict[MediaType, Callable[[bytes, ValidationLimits], int]] = {
    MediaType.PDF: _inspect_pdf,
    MediaType.PNG: _inspect_png,
    MediaType.JPEG: _inspect_jpeg,
    MediaType.TIFF: _inspect_tiff,
    MediaType.WEBP: _inspect_webp,
    MediaType.BMP: _inspect_bmp,
}


def _u16le(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def _u32le(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _short(exc: BaseException, limit: int = 160) -> str:
    message = str(exc).strip().rstrip(".")  # the caller ends the sentence
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
