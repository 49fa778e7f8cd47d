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

This module holds `validate_document` and its dispatch to one inspector per format (`pdf`, `png`, `jpeg`,
`tiff`, `webp`, `bmp`); type detection and the wording for unsupported types are in `sniff`, and what the
inspectors share (the `Rejected` exception, the pixel and page limits, small helpers) in `common`. The
package's only public name is `validate_document`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from PIL import Image

from docflow.domain.validation.bmp import inspect_bmp
from docflow.domain.validation.common import Rejected, human_bytes, short
from docflow.domain.validation.jpeg import inspect_jpeg
from docflow.domain.validation.pdf import inspect_pdf
from docflow.domain.validation.png import inspect_png
from docflow.domain.validation.sniff import sniff_media_type, unsupported_reason
from docflow.domain.validation.tiff import inspect_tiff
from docflow.domain.validation.webp import inspect_webp
from docflow.values import MediaType, RejectionCode, ValidationLimits, ValidationReport

__all__ = ["validate_document"]

_FORMAT_NAMES = {
    MediaType.PDF: "PDF",
    MediaType.PNG: "PNG",
    MediaType.JPEG: "JPEG",
    MediaType.TIFF: "TIFF",
    MediaType.WEBP: "WebP",
    MediaType.BMP: "BMP",
}

_INSPECTORS: dict[MediaType, Callable[[bytes, ValidationLimits], int]] = {
    MediaType.PDF: inspect_pdf,
    MediaType.PNG: inspect_png,
    MediaType.JPEG: inspect_jpeg,
    MediaType.TIFF: inspect_tiff,
    MediaType.WEBP: inspect_webp,
    MediaType.BMP: inspect_bmp,
}


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
            f"The document is {human_bytes(size)} ({size:,} bytes), "
            f"above the limit of {human_bytes(limits.max_bytes)} ({limits.max_bytes:,} bytes).",
        )

    media_type = sniff_media_type(data)
    if media_type is None:
        return rejected(RejectionCode.UNSUPPORTED_TYPE, unsupported_reason(data))

    name = _FORMAT_NAMES[media_type]
    try:
        pages = _INSPECTORS[media_type](data, limits)
    except Rejected as rejection:
        return rejected(rejection.code, rejection.reason, media_type)
    except Image.DecompressionBombError as exc:
        # Only reachable when our own limit is above Pillow's global one: the image passed our header check
        # but no Pillow-based step (OCR included) could open it, so refuse it here, as a bomb.
        return rejected(
            RejectionCode.TOO_MANY_PIXELS,
            f"The {name} image is too large for the image decoder ({short(exc)}).",
            media_type,
        )
    except Exception as exc:  # any parser failure on hostile bytes means the file is unusable
        return rejected(
            RejectionCode.CORRUPT, f"Corrupt {name}: the file could not be parsed ({short(exc)}).", media_type
        )

    return ValidationReport(document_id=document_id, size_bytes=size, media_type=media_type, pages=pages, accepted=True)
