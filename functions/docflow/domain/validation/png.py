"""PNG inspection for the Validate step: headers and chunk structure are checked by hand (every chunk's CRC,
IHDR first, IEND last) and the zlib image stream is inflated, its output discarded, up to a budget; pixels
are never materialised."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from docflow.domain.validation.common import INFLATE_STEP, check_decoded, check_pixels, corrupt
from docflow.values import ValidationLimits

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
# Bytes a pixel takes in Pillow once decoded, by colour type (16-bit grey: 2; RGB is stored as 4 bytes).
_PNG_DECODED_BYTES = {0: 1, 2: 4, 3: 1, 4: 4, 6: 4}
_PNG_KINDS = {0: "greyscale", 2: "colour", 3: "palette", 4: "greyscale-with-alpha", 6: "colour-with-alpha"}
_PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# Inflating runs at only ~150 MB/s on a maximally compressed stream, so a legal but huge image would cost
# seconds; beyond this many decompressed bytes (a whole 300 dpi A4 greyscale scan) the chunk CRCs alone
# vouch for the rest, and the first bytes still prove the stream is real zlib image data.
_PNG_VERIFY_BYTES = 32 << 20


def inspect_png(data: bytes, limits: ValidationLimits) -> int:
    if not data.startswith(_PNG_SIGNATURE):
        raise corrupt("Corrupt PNG: the 8-byte PNG signature is damaged or cut off.")
    chunks = _png_chunks(data)
    kind, ihdr = next(chunks)
    if kind != b"IHDR" or len(ihdr) != 13:
        raise corrupt("Corrupt PNG: the file does not start with a valid IHDR header chunk.")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr)
    check_pixels(width, height, limits, "PNG image")
    if depth not in _PNG_BIT_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise corrupt(
            f"Corrupt PNG: invalid header (bit depth {depth}, colour type {colour}, "
            f"compression {compression}, filter {filtering}, interlace {interlace})."
        )
    per_pixel = 2 if colour == 0 and depth == 16 else _PNG_DECODED_BYTES[colour]
    check_decoded(width, height, width * height * per_pixel, limits, "PNG image", f"{_PNG_KINDS[colour]} PNG page")

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
        raise corrupt("Corrupt PNG: the file has no image data (IDAT chunk).")
    if produced < target:
        if inflater.eof:
            raise corrupt(
                f"Corrupt PNG: the image data holds {produced:,} bytes, fewer than the {expected:,} "
                f"that a {width}x{height} image needs."
            )
        raise corrupt("Truncated PNG: the compressed image data stops before the image is complete.")
    return 1


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """Yield (type, body) for each chunk up to IEND, checking lengths and CRCs."""
    view = memoryview(data)
    pos, end = len(_PNG_SIGNATURE), len(data)
    while True:
        if pos + 8 > end:
            raise corrupt("Truncated PNG: the file ends before the IEND chunk.")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        if not kind.isalpha():
            raise corrupt(f"Corrupt PNG: invalid chunk type {name!r} at byte {pos:,}.")
        stop = pos + 8 + length + 4
        if length > 0x7FFFFFFF or stop > end:
            raise corrupt(f"Truncated PNG: the {name} chunk at byte {pos:,} runs past the end of the file.")
        (crc,) = struct.unpack_from(">I", data, stop - 4)
        if zlib.crc32(view[pos + 4 : stop - 4]) != crc:
            raise corrupt(f"Corrupt PNG: CRC mismatch in the {name} chunk at byte {pos:,}.")
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
            produced += len(inflater.decompress(pending, min(budget - produced, INFLATE_STEP)))
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise corrupt(f"Corrupt PNG: the compressed image data is invalid ({exc}).") from exc
    return produced
