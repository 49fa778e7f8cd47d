"""Hostile inputs, built at test time: every case is a name, the bytes (made in code, a few KiB to a few MiB,
never stored in the repo) and the exact outcome Docflow must reach, whichever front receives it (the CLI,
the API, the state machine).

An outcome is one of: REJECTED with a RejectionCode and words its reason must contain; PROCESSED (the text
was extracted and classified: CLASSIFIED, or NEEDS_REVIEW with a review code) with the text source it must
report; or DUPLICATE of another case.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from PIL import Image

from docflow.samples import LETTER, MEMO, render_page
from tests.unit import crafted

PROCESSED = "PROCESSED"  # CLASSIFIED, or NEEDS_REVIEW with a review code (a reason a person is needed)
REVIEW_CODES = ("LOW_CONFIDENCE", "OUT_OF_SCOPE", "NO_TEXT")


@dataclass(frozen=True)
class Case:
    """One hostile input and the outcome it must have."""

    name: str  # a short id, also the test id
    make: Callable[[], bytes]
    filename: str  # the name it is uploaded under (the S3 key's last part may differ: see `key`)
    status: str  # "REJECTED", "DUPLICATE" or PROCESSED
    code: str | None = None  # RejectionCode for REJECTED, ReviewCode for NEEDS_REVIEW
    reason_has: tuple[str, ...] = ()  # words the reason must contain (case-insensitive)
    text_source: str | None = None  # for PROCESSED: "pdf_text" or "ocr"
    duplicate_of: str | None = None  # for DUPLICATE: the case name whose content this repeats
    key: str | None = None  # the S3 key under incoming/ (default: incoming/hostile/<filename>)
    fronts: frozenset[str] = field(default_factory=lambda: frozenset({"cli", "api", "asl"}))
    why: str = ""

    def data(self) -> bytes:
        return _bytes(self.name)

    @property
    def s3_key(self) -> str:
        return self.key or f"incoming/hostile/{self.filename}"


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def _pdf(objects: list[bytes], *, root: int = 1, trailer_extra: bytes = b"", xref_garbage: bool = False) -> bytes:
    """A PDF from numbered object bodies (object n is objects[n-1]), with a correct (or garbage) xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % (offset * 7 + 13 if xref_garbage else offset))
    out.write(b"trailer\n<< /Size %d /Root %d 0 R %s>>\n" % (len(objects) + 1, root, trailer_extra))
    out.write(b"startxref\n%d\n%%%%EOF\n" % (xref + 5 if xref_garbage else xref))
    return out.getvalue()


def _stream(content: bytes, extra: bytes = b"", *, compress: bool = True) -> bytes:
    if compress:
        data = zlib.compress(content, 9)
        return b"<< /Length %d /Filter /FlateDecode %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"
    return b"<< /Length %d %s>>\nstream\n" % (len(content), extra) + content + b"\nendstream"


def _text_ops(text: str) -> bytes:
    lines = []
    for line in text.splitlines():
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        lines.append(f"({escaped}) Tj T*")
    return ("BT /F1 11 Tf 14 TL 72 720 Td " + " ".join(lines) + " ET").encode("latin-1", "replace")


_HELVETICA = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _text_pdf(
    text: str,
    *,
    pages: int = 1,
    catalog_extra: bytes = b"",
    extra_objects: list[bytes] | None = None,
    media_box: bytes = b"[0 0 612 792]",
    content: bytes | None = None,
    xref_garbage: bool = False,
) -> bytes:
    """`pages` pages that all share ONE content stream (so thousands of pages cost a few bytes each).

    Objects: 1 catalog, 2 page tree, 3 font, 4 content, 5.. extra objects, then the pages.
    """
    extra = extra_objects or []
    first_page = 5 + len(extra)
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b">>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        _HELVETICA,
        _stream(content if content is not None else _text_ops(text)),
        *extra,
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox " + media_box + b" /Contents 4 0 R "
        b"/Resources << /Font << /F1 3 0 R >> >> >>"
    )
    objects += [page] * pages
    return _pdf(objects, xref_garbage=xref_garbage)


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


@cache
def _letter_png() -> bytes:
    return _png(render_page(LETTER, 850, 1100, 15))


@cache
def _memo_png() -> bytes:
    return _png(render_page(MEMO, 850, 1100, 15))


def _png_with_dpi(dpi: int) -> bytes:
    """The memo scan with a pHYs chunk claiming an absurd resolution (pixels per metre)."""
    data = _memo_png()
    per_metre = max(1, round(dpi / 0.0254))
    phys = crafted.png_chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
    end_of_ihdr = 8 + 8 + 13 + 4
    # Drop any pHYs Pillow wrote, then put ours right after IHDR.
    return data[:end_of_ihdr] + phys + _without_chunk(data[end_of_ihdr:], b"pHYs")


def _without_chunk(chunks: bytes, kind: bytes) -> bytes:
    out, pos = bytearray(), 0
    while pos < len(chunks):
        (length,) = struct.unpack_from(">I", chunks, pos)
        stop = pos + 12 + length
        if chunks[pos + 4 : pos + 8] != kind:
            out += chunks[pos:stop]
        pos = stop
    return bytes(out)


def _jpeg_with_density(dpi: int) -> bytes:
    """The letter scan as a JPEG whose JFIF header claims `dpi` (65535 is the field's maximum)."""
    buffer = io.BytesIO()
    render_page(LETTER, 850, 1100, 15).save(buffer, "JPEG", quality=80, dpi=(dpi, dpi))
    return buffer.getvalue()


def _tiff_scan() -> bytes:
    buffer = io.BytesIO()
    pages = [render_page(MEMO, 850, 1100, 15), render_page(LETTER, 850, 1100, 15)]
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    return buffer.getvalue()


def _memo_png_ref() -> bytes:
    return _memo_png()


def _memo_pdf() -> bytes:
    return _text_pdf(MEMO)


def _encrypted_pdf(user: str) -> bytes:
    import pikepdf

    buffer = io.BytesIO()
    with pikepdf.open(io.BytesIO(_memo_pdf())) as document:
        document.save(buffer, encryption=pikepdf.Encryption(user=user, owner="owner-secret", R=6))
    return buffer.getvalue()


def _javascript_pdf() -> bytes:
    """OpenAction and a page-open action that would run JavaScript in a viewer that executes it."""
    js = b"app.alert('pwned'); this.exportDataObject({cName: 'payload', nLaunch: 2});"
    return _text_pdf(
        MEMO,
        catalog_extra=b"/OpenAction 5 0 R /Names << /JavaScript << /Names [(init) 5 0 R] >> >> ",
        extra_objects=[b"<< /Type /Action /S /JavaScript /JS 6 0 R >>", _stream(js)],
    )


def _embedded_file_pdf() -> bytes:
    """A PDF carrying an attached ELF executable (an /EmbeddedFiles name tree and a /Launch action)."""
    payload = crafted.elf_executable() + b"ATTACHMENT-ONLY-TEXT"
    return _text_pdf(
        MEMO,
        catalog_extra=b"/Names << /EmbeddedFiles << /Names [(run.sh) 5 0 R] >> >> "
        b"/OpenAction << /S /Launch /F 5 0 R >> ",
        extra_objects=[
            b"<< /Type /Filespec /F (run.sh) /UF (run.sh) /EF << /F 6 0 R >> >>",
            _stream(payload, b"/Type /EmbeddedFile /Subtype /application#2Fx-executable "),
        ],
    )


def _many_pages_pdf(pages: int = 5000) -> bytes:
    return _text_pdf(MEMO, pages=pages)


def _huge_text_layer_pdf(megabytes: int = 50) -> bytes:
    """One page whose content stream draws `megabytes` MB of text (a ~100 KB file once deflated)."""
    line = b"(" + b"Lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2 + b") Tj T*\n"
    count = megabytes * 1_000_000 // len(line) + 1
    content = b"BT /F1 1 Tf 1 TL 0 790 Td\n" + line * count + b"ET"
    return _text_pdf("", content=content)


def _text_wall(megabytes: float) -> bytes:
    line = b"(" + b"Lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2 + b") Tj T*\n"
    return b"BT /F1 1 Tf 1 TL 0 790 Td\n" + line * int(megabytes * 1_000_000 // len(line)) + b"ET"


def _shared_stream_pdf(pages: int = 500, megabytes: float = 3.9) -> bytes:
    """Every page draws the same 3.9 MB text stream: each stream is under the limit, but PDFium parses it
    once per page (3 s and 0.5 GB each: 25 minutes for the document)."""
    return _text_pdf("", content=_text_wall(megabytes), pages=pages)


def _repeated_kids_pdf(pages: int = 400, megabytes: float = 0.5) -> bytes:
    """ONE page object listed `pages` times in the page tree: one /Contents reference in the file, but
    PDFium counts (and would parse) `pages` pages."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b"5 0 R " * pages + b"] /Count %d >>" % pages,
        _HELVETICA,
        _stream(_text_wall(megabytes)),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 3 0 R >> >> >>",
    ]
    return _pdf(objects)


RTL_LINE = (  # "internal memo" in Hebrew, then in Arabic
    "\u05de\u05d6\u05db\u05e8 \u05e4\u05e0\u05d9\u05de\u05d9 \u2014 "
    "\u0645\u0630\u0643\u0631\u0629 \u062f\u0627\u062e\u0644\u064a\u0629"
)
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _unicode_rtl_pdf() -> bytes:
    """A text layer in Hebrew and Arabic, a right-to-left override around "evil.exe", then the memo: drawn
    with an embedded TrueType font (PDFium's own page editing API), so the layer is real Unicode."""
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    with open(DEJAVU, "rb") as handle:
        font_bytes = handle.read()
    document = pdfium.PdfDocument.new()
    try:
        page = document.new_page(612, 792)
        buffer = (ctypes.c_uint8 * len(font_bytes)).from_buffer_copy(font_bytes)
        font = pdfium_c.FPDFText_LoadFont(document.raw, buffer, len(font_bytes), pdfium_c.FPDF_FONT_TRUETYPE, True)
        for number, line in enumerate([RTL_LINE, "\u202eevil.exe\u202c", *MEMO.splitlines()]):
            text = pdfium_c.FPDFPageObj_CreateTextObj(document.raw, font, 11.0)
            wide = ctypes.create_string_buffer((line + "\0").encode("utf-16-le"))
            pdfium_c.FPDFText_SetText(text, ctypes.cast(wide, pdfium_c.FPDF_WIDESTRING))
            pdfium_c.FPDFPageObj_Transform(text, 1, 0, 0, 1, 72, 720 - 14 * number)
            pdfium_c.FPDFPage_InsertObject(page.raw, text)
        pdfium_c.FPDFPage_GenerateContent(page.raw)
        pdfium_c.FPDFFont_Close(font)
        out = io.BytesIO()
        document.save(out)
        return out.getvalue()
    finally:
        document.close()


def _unicode_rtl_png() -> bytes:
    """A scan whose text mixes Hebrew, Arabic and English (OCR'd with eng only: whatever comes out is text)."""
    return _png(render_page("\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627\n" + MEMO, 850, 1100, 15))


def _polyglot_png_pdf() -> bytes:
    """A real PNG scan with a complete PDF (JavaScript and all) appended after IEND: a PNG/PDF polyglot."""
    return _memo_png() + _javascript_pdf()


def _polyglot_pdf_zip() -> bytes:
    """A ZIP archive whose first member is a PDF: %PDF- within the first 1024 bytes, but PK at offset 0."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.pdf", _memo_pdf())
    return buffer.getvalue()


def _html_with_pdf_header() -> bytes:
    """HTML that mentions %PDF- early (a polyglot attempt that sniffing by header alone would call a PDF)."""
    return b"<html><body><!-- %PDF-1.7 -->\n<p>Invoice</p><script>alert(1)</script></body></html>\n"


def _oversized() -> bytes:
    """Just over the 50 MiB limit: a valid PDF padded with a comment."""
    pdf = _memo_pdf()
    return pdf + b"%" + b"x" * (50 * 1024 * 1024 + 1 - len(pdf) - 1)


def _zero_pages_pdf() -> bytes:
    return _pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def _pdf_page_bomb() -> bytes:
    """One page of 14400 x 14400 pt (200 x 200 inches, the PDF maximum): 40000 x 40000 px at 200 dpi."""
    return _text_pdf(MEMO, media_box=b"[0 0 14400 14400]")


def _pdf_tiny_page() -> bytes:
    return _text_pdf(MEMO, media_box=b"[0 0 1 1]")


def _png_zlib_bomb(colour: int = 2) -> bytes:
    """A 10000 x 10000 white PNG (colour type 2: RGB, 300 MB of pixels; 0: grey, 100 MB) in ~100-300 KB, at the
    pixel limit."""
    width = height = 10_000
    row = b"\x00" + b"\xff" * (width * (3 if colour == 2 else 1))
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        crafted.PNG_SIGNATURE
        + crafted.png_ihdr(width, height, 8, colour)
        + crafted.png_chunk(b"IDAT", idat)
        + crafted.png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------------

_R = "REJECTED"


@cache
def _bytes(name: str) -> bytes:
    return BY_NAME[name].make()


CASES: tuple[Case, ...] = (
    Case("zero-bytes", lambda: b"", "empty.pdf", _R, "EMPTY", ("empty",)),
    Case("truncated-png", lambda: crafted.truncated(_letter_png()), "cut.png", _R, "CORRUPT", ("png",)),
    Case("truncated-jpeg", lambda: crafted.truncated(_jpeg_with_density(200)), "cut.jpg", _R, "CORRUPT", ("jpeg",)),
    Case("truncated-tiff", lambda: crafted.truncated(_tiff_scan(), 0.3), "cut.tiff", _R, "CORRUPT", ("tiff",)),
    Case("truncated-pdf", lambda: crafted.truncated(_memo_pdf(), 0.6), "cut.pdf", _R, "CORRUPT", ("pdf",)),
    Case(
        "png-50000x50000",
        lambda: crafted.png_declaring(50_000, 50_000),
        "bomb.png",
        _R,
        "TOO_MANY_PIXELS",
        ("50000x50000", "100,000,000"),
    ),
    Case(
        "jpeg-50000x50000",
        lambda: crafted.jpeg_declaring(50_000, 50_000),
        "bomb.jpg",
        _R,
        "TOO_MANY_PIXELS",
        ("50000x50000",),
    ),
    Case(
        "webp-16384x16384",
        lambda: crafted.webp_declaring(16_384, 16_384),
        "bomb.webp",
        _R,
        "TOO_MANY_PIXELS",
        ("16384x16384",),
    ),
    Case(
        "bmp-50000x50000",
        lambda: crafted.bmp_declaring(50_000, 50_000),
        "bomb.bmp",
        _R,
        "TOO_MANY_PIXELS",
        ("50000x50000",),
    ),
    Case(
        "tiff-bomb-on-page-2",
        lambda: crafted.tiff_raw(3, sizes=[(32, 24), (60_000, 60_000), (32, 24)]),
        "bomb.tiff",
        _R,
        "TOO_MANY_PIXELS",
        ("page 2",),
    ),
    Case(
        "png-zlib-bomb-100MP",
        _png_zlib_bomb,
        "blank.png",
        _R,
        "TOO_MANY_PIXELS",
        ("decoded whole", "200.0 MiB"),
        why="10000x10000 = the 100 Mpx limit, but a colour PNG is decoded whole: 400 MB, above the 200 MiB a page",
    ),
    Case(
        "png-zlib-bomb-100MP-grey",
        lambda: _png_zlib_bomb(0),
        "blank-grey.png",
        "NEEDS_REVIEW",
        "NO_TEXT",
        reason_has=("no text",),
        text_source="ocr",
        fronts=frozenset({"cli", "api"}),
        why="inside every limit (100 Mpx, 100 MB decoded); downscaled to 20 Mpx before OCR, so < 512 MiB",
    ),
    Case("tiff-5000-frames", lambda: crafted.tiff_raw(5000), "frames.tiff", _R, "TOO_MANY_PAGES", ("500",)),
    Case("pdf-5000-pages", _many_pages_pdf, "pages.pdf", _R, "TOO_MANY_PAGES", ("5,000", "500")),
    Case("pdf-zero-pages", _zero_pages_pdf, "nopages.pdf", _R, "CORRUPT", ("no readable pages",)),
    Case("pdf-encrypted", lambda: _encrypted_pdf("secret"), "locked.pdf", _R, "ENCRYPTED", ("password",)),
    Case(
        "pdf-owner-password-only",
        lambda: _encrypted_pdf(""),
        "permissions.pdf",
        PROCESSED,
        text_source="pdf_text",
        why="opens without a password; PDFium reads it like any other",
    ),
    Case(
        "pdf-javascript",
        _javascript_pdf,
        "script.pdf",
        PROCESSED,
        text_source="pdf_text",
        why="PDFium as built for pypdfium2 has no JavaScript engine and no form environment is loaded",
    ),
    Case(
        "pdf-embedded-executable",
        _embedded_file_pdf,
        "attached.pdf",
        PROCESSED,
        text_source="pdf_text",
        why="attachments and launch actions are never read: only page content is",
    ),
    Case(
        "pdf-corrupt-xref",
        lambda: _text_pdf(MEMO, xref_garbage=True),
        "xref.pdf",
        PROCESSED,
        text_source="pdf_text",
        why="PDFium rebuilds a broken xref from the objects, as every reader does",
    ),
    Case("pdf-header-then-garbage", crafted.pdf_header_then_garbage, "noise.pdf", _R, "CORRUPT", ("pdf",)),
    Case("pdf-page-14400pt", _pdf_page_bomb, "poster.pdf", _R, "TOO_MANY_PIXELS", ("200 dpi",)),
    Case("pdf-page-1pt", _pdf_tiny_page, "dot.pdf", _R, "BAD_DIMENSIONS", ("between",)),
    Case("pdf-50MB-text-layer", _huge_text_layer_pdf, "wall-of-text.pdf", _R, "CONTENT_TOO_LARGE", ("4.0 MiB",)),
    Case(
        "pdf-500-pages-one-3.9MB-stream",
        _shared_stream_pdf,
        "shared.pdf",
        _R,
        "CONTENT_TOO_LARGE",
        ("every page that draws it",),
    ),
    Case(
        "pdf-one-page-object-400-times",
        _repeated_kids_pdf,
        "kids.pdf",
        _R,
        "CONTENT_TOO_LARGE",
        ("every page that draws it",),
    ),
    Case("html-named-pdf", crafted.html, "invoice.pdf", _R, "UNSUPPORTED_TYPE", ("html",)),
    Case("zip-named-pdf", crafted.zip_archive, "archive.pdf", _R, "UNSUPPORTED_TYPE", ("zip",)),
    Case("elf-named-pdf", crafted.elf_executable, "binary.pdf", _R, "UNSUPPORTED_TYPE", ("elf",)),
    Case("shell-script-named-pdf", crafted.shell_script, "run.pdf", _R, "UNSUPPORTED_TYPE", ("shell script",)),
    Case(
        "polyglot-png-then-pdf",
        _polyglot_png_pdf,
        "polyglot.pdf",
        PROCESSED,
        text_source="ocr",
        why="the leading PNG signature decides; the appended PDF is never parsed",
    ),
    Case("polyglot-zip-holding-pdf", _polyglot_pdf_zip, "polyglot-zip.pdf", _R, "UNSUPPORTED_TYPE", ("zip",)),
    Case("polyglot-html-with-pdf-marker", _html_with_pdf_header, "page.pdf", _R, "UNSUPPORTED_TYPE", ("html",)),
    Case("png-1x1", lambda: _png(Image.new("L", (1, 1), 255)), "pixel.png", _R, "BAD_DIMENSIONS", ("1x1",)),
    Case(
        "png-absurd-dpi",
        lambda: _png_with_dpi(4_000_000),
        "dpi.png",
        PROCESSED,
        text_source="ocr",
        why="the declared resolution is ignored: OCR works on the pixels",
    ),
    Case("jpeg-absurd-dpi", lambda: _jpeg_with_density(65_535), "dpi.jpg", PROCESSED, text_source="ocr"),
    Case("oversized-50MiB-plus-1", _oversized, "huge.pdf", _R, "TOO_LARGE", ("52,428,800",)),
    Case(
        "pdf-unicode-rtl-text-layer",
        _unicode_rtl_pdf,
        "\u05de\u05d6\u05db\u05e8.pdf",
        PROCESSED,
        text_source="pdf_text",
        why="Hebrew, Arabic and a U+202E override in the text layer are text like any other",
    ),
    Case(
        "unicode-rtl-name-and-text",
        _unicode_rtl_png,
        "\u05de\u05e1\u05de\u05da-\u202egpj.png",
        PROCESSED,
        text_source="ocr",
        key="incoming/hostile/\u05de\u05e1\u05de\u05da-\u202egpj.png",
    ),
    Case(
        "non-utf8-name",
        _memo_png_ref,
        os.fsdecode(b"scan-\xff\xfe-latin1-\xe9.png"),
        PROCESSED,
        text_source="ocr",
        key="incoming/hostile/Rechnung %FF+\u00fc\x01\x7f.png",
        why="a file name that is not UTF-8 (CLI) or a key with %XX, + and control characters (S3)",
    ),
    Case(
        "very-long-key",
        _letter_png,
        "l" * 200 + ".png",
        PROCESSED,
        text_source="ocr",
        key="incoming/" + "/".join(["d" * 100] * 9) + "/" + "l" * 100 + ".png",
    ),
    Case(
        "dot-dot-key",
        lambda: _png(render_page(MEMO + "\nref 42", 850, 1100, 15)),
        "../../etc/passwd.png",
        PROCESSED,
        text_source="ocr",
        key="incoming/../../etc/passwd.png",
    ),
    Case(
        "duplicate-of-long-key",
        lambda: _bytes("very-long-key"),
        "zz-copy-of-letter.png",
        "DUPLICATE",
        reason_has=("same content as",),
        duplicate_of="very-long-key",
        key="incoming/hostile/zz-copy-of-letter.png",
    ),
)

BY_NAME = {case.name: case for case in CASES}


def outcome_problems(
    case: Case, status: str, code: str | None, reason: str | None, text_source: str | None
) -> list[str]:
    """What is wrong with an observed outcome for this case (empty when it is exactly the expected one)."""
    problems = []
    if case.status == PROCESSED:
        classified = status == "CLASSIFIED" and code is None
        if not classified and not (status == "NEEDS_REVIEW" and code in REVIEW_CODES):
            problems.append(f"expected CLASSIFIED, or NEEDS_REVIEW with a review code, got {status} {code}: {reason}")
    elif status != case.status or code != case.code:
        problems.append(f"expected {case.status} {case.code}, got {status} {code}: {reason}")
    for words in case.reason_has:
        if words.lower() not in (reason or "").lower():
            problems.append(f"reason {reason!r} does not say {words!r}")
    if case.text_source and text_source != case.text_source and case.status != "DUPLICATE":
        problems.append(f"expected text from {case.text_source}, got {text_source}")
    return problems


def cases_for(front: str) -> list[Case]:
    return [case for case in CASES if front in case.fronts]
