"""A page of a document as a small image for a person to look at (the review page): PDF pages rendered by
PDFium, image frames (a TIFF's pages) decoded by Pillow, upright by their EXIF orientation, at most
PREVIEW_SIDE pixels on their longer side. Bilevel and grey scans come out as PNG (small, sharp text), colour
as JPEG. Only documents Validate accepted reach here, so their pixel counts are already bounded.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from docflow.domain.pdfium_lock import PDFIUM_LOCK
from docflow.values import MediaType, ValidationLimits

if TYPE_CHECKING:  # Pillow and PDFium are imported when a preview is drawn, not when the API starts
    from PIL import Image

PREVIEW_SIDE = 1400


class PreviewError(Exception):
    """The page cannot be shown (it does not exist, or the file cannot be decoded)."""


def render_preview(
    data: bytes, media_type: MediaType, page: int, limits: ValidationLimits, side: int = PREVIEW_SIDE
) -> tuple[bytes, str]:
    """Page ``page`` (1-based) of the document as (image bytes, media type)."""
    from PIL import Image

    if media_type is MediaType.PDF:
        image = _pdf_page(data, page, side)
    else:
        image = _image_frame(data, media_type, page, side, limits)
    with image:
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if image.mode in ("1", "L", "LA"):
            image.convert("L").save(out, format="PNG", optimize=False, compress_level=6)
            return out.getvalue(), "image/png"
        image.convert("RGB").save(out, format="JPEG", quality=85)
        return out.getvalue(), "image/jpeg"


def _pdf_page(data: bytes, page: int, side: int) -> Image.Image:
    with PDFIUM_LOCK:  # PDFium is not thread-safe, and the API draws previews on several threads
        return _pdf_page_unlocked(data, page, side)


def _pdf_page_unlocked(data: bytes, page: int, side: int) -> Image.Image:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise PreviewError(f"cannot open the PDF: {exc}") from exc
    try:
        if not 1 <= page <= len(pdf):
            raise PreviewError(f"the PDF has {len(pdf)} page(s), not page {page}")
        pdf_page = pdf[page - 1]
        try:
            width, height = pdf_page.get_size()
            scale = side / max(width, height, 1.0)
            bitmap = pdf_page.render(scale=scale)
            try:
                return bitmap.to_pil().copy()  # the copy outlives the bitmap's buffer
            finally:
                bitmap.close()
        finally:
            pdf_page.close()
    finally:
        pdf.close()


def _image_frame(data: bytes, media_type: MediaType, page: int, side: int, limits: ValidationLimits) -> Image.Image:
    # Imported here, as pdfium is for PDFs: the API loads Pillow (and the raster helpers) for a preview only.
    from PIL import Image

    from docflow.domain.raster import EXIF_ORIENTATION, turned_upright

    errors = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
    try:
        source = Image.open(io.BytesIO(data))
    except errors as exc:
        raise PreviewError(f"cannot open the image: {exc}") from exc
    with source:
        frames = 1 if media_type is MediaType.JPEG else getattr(source, "n_frames", 1)
        if not 1 <= page <= frames:
            raise PreviewError(f"the image has {frames} page(s), not page {page}")
        try:
            source.seek(page - 1)
            if source.width * source.height > limits.max_pixels_per_page:
                raise PreviewError("the page is larger than this deployment accepts")
            if media_type is MediaType.JPEG:
                source.draft("RGB" if source.mode != "L" else "L", (side, side))  # decode at 1/2..1/8 size
            factor = math.floor(max(source.width, source.height) / (2 * side))
            frame = source.reduce(factor) if factor >= 2 else source.copy()
            return turned_upright(frame, source.getexif().get(EXIF_ORIENTATION, 1))  # as a phone shot it
        except PreviewError:
            raise
        except errors as exc:
            raise PreviewError(f"cannot decode page {page}: {exc}") from exc
