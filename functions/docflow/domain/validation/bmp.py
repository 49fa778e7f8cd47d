"""BMP inspection for the Validate step: the size from the DIB header, the rest of the header through Pillow,
then the pixel array's extent; pixels are not decoded (a BMP is either raw rows, whose length the header
fixes, or RLE, which Pillow decodes leniently in pure Python)."""

from __future__ import annotations

import io
import struct

from PIL import BmpImagePlugin

from docflow.domain.validation.common import check_decoded, check_pixels, corrupt, pillow_bytes_per_pixel, u16le, u32le
from docflow.values import ValidationLimits

_BMP_RLE = (1, 2)  # BI_RLE8, BI_RLE4
_BMP_FIXED_ROWS = (0, 3, 6)  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS


def inspect_bmp(data: bytes, limits: ValidationLimits) -> int:
    header_size = u32le(data, 14)
    if len(data) < 14 + header_size:
        raise corrupt("Truncated BMP: the file ends inside its header.")
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes, never compressed
        width, height, bits, compression, image_size = u16le(data, 18), u16le(data, 20), u16le(data, 24), 0, 0
    else:
        width, height = struct.unpack_from("<ii", data, 18)
        bits, compression, image_size = struct.unpack_from("<HII", data, 28)
        height = abs(height)  # negative height = rows stored top-down
        if width < 0:
            raise corrupt(f"Corrupt BMP: negative width {width}.")
    check_pixels(width, height, limits, "BMP image")

    # Pillow validates the rest of the header (bit depth, bit fields, palette, compression) without decoding.
    with BmpImagePlugin.BmpImageFile(io.BytesIO(data)) as image:
        cost = width * height * pillow_bytes_per_pixel(image.mode)
        check_decoded(width, height, cost, limits, "BMP image", f"BMP page in mode {image.mode}")
    pixel_offset = u32le(data, 10)
    if compression in _BMP_RLE:
        # RLE data has no fixed length, but its size field is mandatory for these compressions.
        if image_size == 0:
            raise corrupt("Corrupt BMP: run-length-encoded image without its data size.")
        needed = pixel_offset + image_size
    else:
        # Rows are fixed-size and padded to 4 bytes: a cut-off file is visible from the header alone.
        needed = pixel_offset + (width * bits + 31) // 32 * 4 * height
    if needed > len(data):
        raise corrupt(f"Truncated BMP: the pixel data needs {needed:,} bytes but the file has {len(data):,}.")
    return 1
