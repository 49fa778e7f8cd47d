"""Type detection for the Validate step: the media type from the content alone (magic bytes, never a file
name or a declared Content-Type), including where a PDF header may sit and which prefixes make a PDF a
polyglot; and, for a file of no accepted type, a human guess at what it is (an executable, an archive, an
Office document, a script, HTML...) to word the UNSUPPORTED_TYPE reason."""

from __future__ import annotations

import re

from docflow.domain.validation.common import u32le
from docflow.values import MediaType

_ACCEPTED_TYPES = "PDF, PNG, JPEG, TIFF, WebP and BMP"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_BMP_DIB_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)


def sniff_media_type(data: bytes) -> MediaType | None:
    if data.startswith(b"\x89PNG"):
        return MediaType.PNG
    if data.startswith(b"\xff\xd8\xff"):
        return MediaType.JPEG
    if data[:4] in _TIFF_SIGNATURES:
        return MediaType.TIFF
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return MediaType.WEBP
    # "BM" alone would match any text starting with those letters; the DIB header size pins it down.
    if data.startswith(b"BM") and len(data) >= 18 and u32le(data, 14) in _BMP_DIB_HEADER_SIZES:
        return MediaType.BMP
    # PDF readers (Acrobat, PDFium) accept the header anywhere in the first 1024 bytes: some mail
    # gateways and scanners prepend a line. Checked last so binary signatures at offset 0 win; and what
    # comes before the header must be such a line, not another format (a ZIP, an executable, HTML): that
    # is a polyglot, made to be read one way by us and another by the next program.
    at = data.find(b"%PDF-", 0, 1024)
    if at == 0 or (at > 0 and _describe(data[:at]) in _HARMLESS_PDF_PREFIXES):
        return MediaType.PDF
    return None


# What may precede %PDF- (see sniff_media_type): nothing recognisable, a line of text, mail headers.
_HARMLESS_PDF_PREFIXES = (None, "plain text", "an email message")


def unsupported_reason(data: bytes) -> str:
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
