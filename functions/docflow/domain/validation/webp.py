"""WebP inspection for the Validate step: the RIFF length, the canvas size from the first chunk, then the
container structure through libwebp's demuxer; pixels are not decoded."""

from __future__ import annotations

import io

from PIL import WebPImagePlugin

from docflow.domain.validation.common import check_decoded, check_pixels, corrupt, u16le, u32le
from docflow.values import ValidationLimits

# Bytes a pixel takes while Pillow decodes a WebP: libwebp's animation decoder keeps its canvases (RGBA) and
# hands over a copy of the frame, beside Pillow's own image (measured: 14.6 bytes a pixel at 25 Mpx).
_WEBP_DECODE_BYTES_PER_PIXEL = 15


def inspect_webp(data: bytes, limits: ValidationLimits) -> int:
    if len(data) < 30:
        raise corrupt("Truncated WebP: the file is too short to hold a WebP header.")
    declared = 8 + u32le(data, 4)
    if len(data) < declared:
        raise corrupt(f"Truncated WebP: the RIFF header declares {declared:,} bytes but the file has {len(data):,}.")
    width, height = _webp_canvas_size(data)
    check_pixels(width, height, limits, "WebP image")
    check_decoded(width, height, width * height * _WEBP_DECODE_BYTES_PER_PIXEL, limits, "WebP image", "WebP page")
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
        return u16le(data, 26) & 0x3FFF, u16le(data, 28) & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: signature byte, then 14-bit width-1, height-1
        bits = u32le(data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise corrupt(f"Corrupt WebP: unrecognised first chunk {chunk.decode('latin-1')!r}.")
