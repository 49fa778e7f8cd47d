"""Page images for OCR: from a decoded frame (or a rendered PDF page) to the 8-bit image Tesseract reads, within
a pixel budget and with at most one full-size copy of the page in memory.

Split out of extraction.py (which decides what to read and runs the engine): this module only turns pixels
into pixels. A frame above MAX_OCR_PIXELS is brought down to it (a JPEG already while it is decoded, by DCT
scaling), and its mode conversion (grey, flattening transparency, 16-bit stretch) runs band by band together
with the downscale, so that neither a converted nor a resized full-size copy ever exists beside the decoded
frame. ``ocr_frame`` does all of it for the current frame of an opened image and then lets go of the decoded
pixels, also for a multi-page TIFF whose file stays open for the next page.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
from functools import cache

from PIL import Image

from docflow.values import OcrOptions

__all__ = [
    "EXIF_ORIENTATION",
    "MAX_OCR_PIXELS",
    "jpeg_draft_scale",
    "mmap_large_buffers",
    "ocr_frame",
    "prepare_for_ocr",
    "release_pixels",
    "to_ocr_mode",
    "turned_upright",
    "upscale_factor",
]

# The most pixels a page is read at; a larger frame (or PDF page render) is downscaled to it first. OCR gains
# nothing past ~300-400 dpi (Tesseract reads best with capitals ~30 px high): a letter page at 300 dpi is 8.4
# Mpx, an A3 page at 300 dpi 17.4 Mpx, both left alone; an A4 page at 600 dpi (35 Mpx) is read at ~450 dpi.
# It is also what bounds memory: a 100 Mpx page (the validation limit) read whole would cost Tesseract and
# the copies handed to it over 1 GB; at 20 Mpx a page peaks under 512 MiB for the whole `docflow process`
# (tests/integration/test_big_raster.py, bench/big_raster.py).
MAX_OCR_PIXELS = 20_000_000
# Source pixels converted and downscaled at a time: small beside the frame, large enough to stay fast.
BAND_PIXELS = 4_000_000
EXIF_ORIENTATION = 0x0112  # the EXIF tag a camera records how it was held in
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def turned_upright(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` turned as an EXIF orientation tag (1-8) says the camera held it: for a copy that lost its tag
    (a reduced frame, a preview); a frame that still has it takes ImageOps.exif_transpose."""
    transpose = _ORIENT.get(orientation)
    return image.transpose(transpose) if transpose is not None else image


def to_ocr_mode(image: Image.Image, extrema: tuple[float, float] | None = None) -> Image.Image:
    """An 8-bit "L" or "RGB" image from any PIL mode (the same object when it already is one);
    transparency is flattened onto white.

    Gray stays gray (1-bit becomes L so it can be resampled); colour stays RGB, since Tesseract picks
    the best channel when thresholding. 16/32-bit integer and float images are stretched min..max to 0..255
    (``extrema``: the whole frame's min and max, when ``image`` is a band of it).
    """
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        has_alpha = "transparency" in image.info or (image.palette is not None and image.palette.mode == "RGBA")
        return _flatten(image.convert("RGBA")) if has_alpha else image.convert("RGB")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        flat = _flatten(image.convert("RGBA"))
        return flat.convert("L") if mode in ("LA", "La") else flat
    if mode.startswith("I") or mode == "F":
        # Imported here: only 16/32-bit frames need numpy, and the Validate step imports this module (for
        # jpeg_draft_scale) without it.
        import numpy as np

        # float32, in place: 5 bytes per pixel at most (float64 with temporaries took ~24).
        arr = np.array(image, dtype=np.float32)  # a copy of its own, changed in place
        lo, hi = extrema if extrema is not None else (float(arr.min()), float(arr.max()))
        if hi <= lo:
            return Image.new("L", image.size, 255)
        arr -= lo
        arr *= 255.0 / (hi - lo)
        np.clip(np.rint(arr, out=arr), 0, 255, out=arr)
        return Image.fromarray(arr.astype(np.uint8))
    # CMYK, YCbCr, LAB, HSV, RGBX, ...
    return image.convert("RGB")


def _flatten(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def upscale_factor(height: int, options: OcrOptions, width: int | None = None) -> float:
    """How much to enlarge an image of this height (and width) before OCR (1.0 = leave it).

    Tesseract reads text best with capital letters ~30 px high (about 300 dpi); ~100-dpi scans such as
    RVL-CDIP and FUNSD (1000 px for a letter page) gain a lot from a Lanczos upscale. A page lower than
    ``options.upscale_below_height`` is brought towards ``options.upscale_target_height``, by at most
    ``options.upscale_factor``, and never past MAX_OCR_PIXELS when the width is given.
    """
    if options.upscale_factor <= 1.0 or not 0 < height < options.upscale_below_height:
        return 1.0
    factor = min(options.upscale_factor, options.upscale_target_height / height)
    if width:
        factor = min(factor, math.sqrt(MAX_OCR_PIXELS / (width * height)))
    return factor if factor > 1.0 else 1.0


def prepare_for_ocr(image: Image.Image, options: OcrOptions, *, allow_upscale: bool = True) -> Image.Image:
    """Mode conversion, then the low-resolution upscale (Lanczos) when the options ask for it."""
    image = to_ocr_mode(image)
    factor = upscale_factor(image.height, options, image.width) if allow_upscale else 1.0
    if factor != 1.0:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def jpeg_draft_scale(pixels: int, budget: int = MAX_OCR_PIXELS) -> int:
    """The DCT scale (1, 2, 4 or 8) a JPEG of ``pixels`` is decoded at: the least reduction that leaves at most
    twice the budget (the scales are 4x apart in pixels, so the result is between half and twice the budget;
    above it, ``fit`` takes it down the rest of the way)."""
    for scale in (1, 2, 4):
        if pixels <= 2 * budget * scale * scale:
            return scale
    return 8


def fit(image: Image.Image, budget: int = MAX_OCR_PIXELS) -> Image.Image:
    """``image`` in an OCR mode (``to_ocr_mode``) and at most ``budget`` pixels (area-averaged), made band by
    band: besides ``image`` only the result and one band are in memory. A new image, even when nothing changes
    but the mode (``image`` is left as it is, for its owner to close)."""
    width, height = image.size
    scale = min(1.0, math.sqrt(budget / (width * height)))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    extrema = None
    if image.mode.startswith("I") or image.mode == "F":
        low, high = image.getextrema()
        extrema = (float(low), float(high))  # type: ignore[arg-type]
    step = height / size[1]  # source rows per output row
    rows = max(1, int(BAND_PIXELS / (width * step)))  # output rows per band
    out: Image.Image | None = None
    for first in range(0, size[1], rows):
        last = min(size[1], first + rows)
        top, bottom = first * step, last * step
        crop_top, crop_bottom = int(top), min(height, math.ceil(bottom))
        band = to_ocr_mode(image.crop((0, crop_top, width, crop_bottom)), extrema)
        if band.size != (size[0], last - first):
            band = band.resize(
                (size[0], last - first), Image.Resampling.BOX, box=(0, top - crop_top, width, bottom - crop_top)
            )
        if out is None:
            out = Image.new(band.mode, size)
        out.paste(band, (0, first))
    assert out is not None
    return out


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


@cache
def mmap_large_buffers() -> bool:
    """Have glibc give every allocation of MMAP_THRESHOLD_BYTES or more its own mapping, returned to the system
    when freed (once per process; False where the C library is not glibc).

    By default glibc raises that threshold (up to 32 MiB) each time such a block is freed, after which page
    buffers (Pillow's 16 MiB blocks, Tesseract's images) come from the heap, where freed memory stays resident:
    measured, a 3-page TIFF (100 Mpx grey, then 52 Mpx colour) peaked at 527 MB, 428 MB with the threshold
    pinned, as the next page no longer stacks on the memory the previous one freed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def release_pixels(source: Image.Image) -> None:
    """Drop the decoded pixels of an opened file's current frame and keep the file open for the next one. A
    multi-page TIFF otherwise holds its last frame decoded until the next seek and load; Pillow has no public
    call that frees it but close(), which would end the file."""
    source._im = None


def ocr_frame(source: Image.Image, budget: int = MAX_OCR_PIXELS) -> Image.Image:
    """The current frame of an opened image, decoded, upright (EXIF orientation, for phone photos), in an
    OCR mode and at most ``budget`` pixels; the source's decoded pixels are released before it returns.

    A JPEG is decoded at a reduced DCT scale when it is far above the budget (``jpeg_draft_scale``); every
    other format is decoded whole (validation bounds what that costs: ValidationLimits.max_decoded_bytes_per_page).
    """
    mmap_large_buffers()
    orientation = source.getexif().get(EXIF_ORIENTATION, 1)
    if source.format in ("JPEG", "MPO") and (scale := jpeg_draft_scale(source.width * source.height, budget)) > 1:
        source.draft(source.mode, (source.width // scale, source.height // scale))
    source.load()
    try:
        image = fit(source, budget)
    finally:
        release_pixels(source)
    turned = turned_upright(image, orientation)
    if turned is not image:
        image.close()
    return turned
