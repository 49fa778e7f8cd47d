"""TIFF inspection for the Validate step: every IFD (page) is read, up to the page limit, and its strips or
tiles located inside the file; pixels are not decoded, since a 500-page TIFF would take far too long and
each page is decoded anyway by ExtractText."""

from __future__ import annotations

import io

from PIL import TiffImagePlugin

from docflow.domain.validation.common import (
    check_decoded,
    check_pixels,
    corrupt,
    pillow_bytes_per_pixel,
    too_many_pages,
)
from docflow.values import ValidationLimits

_STRIP_OFFSETS, _STRIP_BYTE_COUNTS, _TILE_OFFSETS, _TILE_BYTE_COUNTS = 273, 279, 324, 325


def inspect_tiff(data: bytes, limits: ValidationLimits) -> int:
    # A writer that puts the directory after the pixel data (Pillow, libtiff) leaves a cut-off file with a
    # header pointing past its end; say so plainly instead of reporting whatever the parser trips on.
    big = data[2:4] in (b"+\x00", b"\x00+")
    header = 16 if big else 8
    first_ifd = int.from_bytes(data[8:16] if big else data[4:8], "little" if data.startswith(b"II") else "big")
    if len(data) < header or first_ifd + (8 if big else 2) > len(data):
        raise corrupt("Truncated TIFF: the first page directory lies past the end of the file.")
    if first_ifd < header:
        raise corrupt(f"Corrupt TIFF: the first page directory offset ({first_ifd}) points into the header.")
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
                raise too_many_pages(f"more than {limits.max_pages:,}", limits)
            check_pixels(*image.size, limits, f"TIFF page {pages}")
            width, height = image.size
            cost = width * height * pillow_bytes_per_pixel(image.mode)
            check_decoded(width, height, cost, limits, f"TIFF page {pages}", f"TIFF page in mode {image.mode}")
            _check_tiff_extents(image, pages, len(data))
    return pages


def _check_tiff_extents(image: TiffImagePlugin.TiffImageFile, page: int, size: int) -> None:
    """The page's strips or tiles must lie inside the file: this is what a truncated TIFF gets wrong."""
    tags = image.tag_v2
    offsets = tags.get(_STRIP_OFFSETS) or tags.get(_TILE_OFFSETS)
    counts = tags.get(_STRIP_BYTE_COUNTS) or tags.get(_TILE_BYTE_COUNTS)
    if offsets is None:
        raise corrupt(f"Corrupt TIFF: page {page} has no image data (no strip or tile offsets).")
    offsets = offsets if isinstance(offsets, tuple) else (offsets,)
    if counts is None:
        counts = (1,) * len(offsets)  # optional for some old writers: at least the first byte must exist
    counts = counts if isinstance(counts, tuple) else (counts,)
    if len(counts) != len(offsets):
        raise corrupt(f"Corrupt TIFF: page {page} lists {len(offsets)} data blocks but {len(counts)} sizes.")
    if any(offset + count > size for offset, count in zip(offsets, counts, strict=True)):
        raise corrupt(f"Truncated TIFF: the image data of page {page} runs past the end of the file.")
