"""What every format inspector of the Validate step shares: the `Rejected` exception that an inspector raises
to refuse a document (and `corrupt`, its most common form), the pixel and page limits every format checks
from its headers before decoding anything, the inflate step size that keeps zlib's memory flat, the
little-endian field readers, and the wording helpers for sizes and exception messages."""

from __future__ import annotations

from docflow.values import RejectionCode, ValidationLimits

INFLATE_STEP = 1 << 20  # decompressed bytes per zlib call: keeps memory flat whatever the image size


class Rejected(Exception):
    """Raised by the format inspectors; turned into a rejection report by `validate_document`."""

    def __init__(self, code: RejectionCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def corrupt(reason: str) -> Rejected:
    return Rejected(RejectionCode.CORRUPT, reason)


def check_pixels(width: int, height: int, limits: ValidationLimits, what: str) -> None:
    """Refuse a page whose size, as declared by its header, is a bomb or an unusable shape."""
    # Pixels first: a 50000x50000 bomb is a bomb, whichever side also breaks the dimension limit.
    pixels = width * height
    if pixels > limits.max_pixels_per_page:
        raise Rejected(
            RejectionCode.TOO_MANY_PIXELS,
            f"The {what} is {width}x{height} pixels ({pixels:,} pixels), "
            f"above the limit of {limits.max_pixels_per_page:,} pixels per page.",
        )
    if max(width, height) > limits.max_dimension or min(width, height) < limits.min_dimension:
        raise Rejected(
            RejectionCode.BAD_DIMENSIONS,
            f"The {what} is {width}x{height} pixels; each side must be between "
            f"{limits.min_dimension:,} and {limits.max_dimension:,} pixels.",
        )


def pillow_bytes_per_pixel(mode: str) -> int:
    """Bytes a pixel of this Pillow mode takes once decoded (Pillow stores RGB as 4 bytes, LA too)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def check_decoded(width: int, height: int, cost: float, limits: ValidationLimits, what: str, kind: str) -> None:
    """Refuse a page that a decoder must hold whole (``cost`` bytes, estimated from the header) when that is
    above the memory budget for one page. ``kind``: what the page is, for the reason ("colour PNG image")."""
    if cost <= limits.max_decoded_bytes_per_page:
        return
    pixels = width * height
    most = int(pixels * limits.max_decoded_bytes_per_page / cost)
    raise Rejected(
        RejectionCode.TOO_MANY_PIXELS,
        f"The {what} is {width}x{height} pixels ({pixels:,} pixels). A {kind} is decoded whole before it is "
        f"read, which would take {human_bytes(int(cost))} of memory, above the limit of "
        f"{human_bytes(limits.max_decoded_bytes_per_page)} per page: at most {most:,} pixels of this kind "
        f"(max {limits.max_pixels_per_page:,} pixels for a greyscale or baseline JPEG page). "
        "Scan it at a lower resolution, in greyscale, or as a baseline JPEG.",
    )


def too_many_pages(count: str, limits: ValidationLimits) -> Rejected:
    return Rejected(
        RejectionCode.TOO_MANY_PAGES,
        f"The document has {count} pages, above the limit of {limits.max_pages:,}.",
    )


def u16le(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def u32le(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def short(exc: BaseException, limit: int = 160) -> str:
    message = str(exc).strip().rstrip(".")  # the caller ends the sentence
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
