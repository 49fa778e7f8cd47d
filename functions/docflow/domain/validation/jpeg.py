"""JPEG inspection for the Validate step: the size from the SOF header, a walk over the marker structure up
to EOI (which catches a cut-off file and a scan-count attack), then a decode at 1/8 scale, except for large
progressive files, which the marker walk alone vouches for."""

from __future__ import annotations

import io
import re

from PIL import JpegImagePlugin

from docflow.domain.raster import jpeg_draft_scale
from docflow.domain.validation.common import check_decoded, check_pixels, corrupt, pillow_bytes_per_pixel, short
from docflow.values import ValidationLimits

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


def inspect_jpeg(data: bytes, limits: ValidationLimits) -> int:
    # The plugin class is used directly instead of Image.open: it parses the markers up to the first scan
    # without Pillow's global MAX_IMAGE_PIXELS check, so our own limit decides.
    with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as image:
        width, height = image.size
        check_pixels(width, height, limits, "JPEG image")
        progressive, scans = _jpeg_structure(data)
        if scans > _JPEG_MAX_SCANS:
            raise corrupt(f"Corrupt JPEG: {scans} scans, more than any encoder writes ({_JPEG_MAX_SCANS}).")
        if progressive:
            cost = _progressive_decode_bytes(image)
            check_decoded(width, height, cost, limits, "JPEG image", "progressive JPEG page")
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
                raise corrupt(f"Truncated JPEG: the image data stops early ({short(exc)}).") from exc
            raise corrupt(f"Corrupt JPEG: the image could not be decoded ({short(exc)}).") from exc
    return 1


def _progressive_decode_bytes(image: JpegImagePlugin.JpegImageFile) -> float:
    """Memory a progressive JPEG takes to decode for OCR: every DCT coefficient of every component (2 bytes
    each, whatever the output scale), and the output at the scale ExtractText decodes it at."""
    width, height = image.size
    layers = image.layer or [(0, 1, 1, 0)]
    h_max, v_max = max(layer[1] for layer in layers), max(layer[2] for layer in layers)
    samples = sum(layer[1] * layer[2] for layer in layers) / (h_max * v_max)
    scale = jpeg_draft_scale(width * height)
    return 2 * width * height * samples + pillow_bytes_per_pixel(image.mode) * width * height / (scale * scale)


def _jpeg_structure(data: bytes) -> tuple[bool, int]:
    """Walk the markers from SOI to EOI; return (progressive, number of scans).

    This is what catches a cut-off JPEG even where a decoder would pad it: a complete file has an EOI
    marker after its last scan (bytes after EOI, e.g. camera trailers, are allowed).
    """
    end = len(data)
    pos, progressive, scans = 2, False, 0
    while True:
        if pos + 2 > end:
            raise corrupt("Truncated JPEG: the file ends before the end-of-image marker.")
        if data[pos] != 0xFF:
            raise corrupt(f"Corrupt JPEG: expected a marker at byte {pos:,}.")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            if not scans:
                raise corrupt("Corrupt JPEG: the file ends before any image data.")
            return progressive, scans
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > end:
            raise corrupt("Truncated JPEG: the file ends inside a marker segment.")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            raise corrupt(f"Corrupt JPEG: invalid segment length at byte {pos:,}.")
        pos += 2 + length
        if pos > end:
            raise corrupt("Truncated JPEG: a marker segment runs past the end of the file.")
        if marker in _JPEG_SOF:
            progressive = progressive or marker in _JPEG_PROGRESSIVE_SOF
        elif marker == 0xDA:  # SOS: entropy-coded data follows, up to the next marker
            scans += 1
            found = _JPEG_NEXT_MARKER.search(data, pos)
            if found is None:
                raise corrupt("Truncated JPEG: the image data stops before the end-of-image marker.")
            pos = found.start()
