"""validate_document: type by content, limits, bombs, truncation, encryption; never raises."""

from __future__ import annotations

import hashlib
import random
import time
import tracemalloc
from collections.abc import Callable

import pytest
from PIL import Image, ImageFile

from docflow.domain.validation import validate_document
from docflow.values import MediaType, RejectionCode, ValidationLimits, ValidationReport

from . import crafted

pytestmark = [
    pytest.mark.unit,
    # Pillow warns (UserWarning) about the damaged TIFF/EXIF data some of these tests feed it on purpose.
    pytest.mark.filterwarnings("ignore::UserWarning:PIL.*"),
]

LIMITS = ValidationLimits()
ACCEPTED_TYPES = "PDF, PNG, JPEG, TIFF, WebP and BMP"


def assert_rejected(report: ValidationReport, code: RejectionCode) -> str:
    """The report refuses the document with `code` and a human sentence; returns the reason."""
    assert not report.accepted
    assert report.code == code, report.reason
    reason = report.reason
    assert isinstance(reason, str)
    assert len(reason) > 15 and reason[0].isupper() and reason.endswith("."), reason
    assert report.pages is None
    return reason


def assert_identity(report: ValidationReport, data: bytes) -> None:
    assert report.document_id == hashlib.sha256(data).hexdigest()
    assert report.size_bytes == len(data)


# --------------------------------------------------------------------------------------------------
# Accepted documents
# --------------------------------------------------------------------------------------------------

ACCEPTED: dict[str, tuple[Callable[[], bytes], MediaType, int]] = {
    "pdf-1-page": (lambda: crafted.pdf(1), MediaType.PDF, 1),
    "pdf-3-pages": (lambda: crafted.pdf(3), MediaType.PDF, 3),
    "pdf-a4-landscape": (lambda: crafted.pdf(2, 842, 595), MediaType.PDF, 2),
    "pdf-owner-password-only": (lambda: crafted.encrypted_pdf(user_password=""), MediaType.PDF, 1),
    "pdf-after-a-junk-line": (lambda: b"X-Mailer-Junk: 1\r\n" + crafted.pdf(2), MediaType.PDF, 2),
    "png-rgb": (lambda: crafted.png(), MediaType.PNG, 1),
    "png-rgba": (lambda: crafted.png(mode="RGBA"), MediaType.PNG, 1),
    "png-1bit": (lambda: crafted.png(mode="1"), MediaType.PNG, 1),
    "png-palette": (lambda: crafted.png(mode="P"), MediaType.PNG, 1),
    "png-interlaced": (lambda: crafted.png_raw(37, 23, interlace=True), MediaType.PNG, 1),
    "jpeg-baseline": (lambda: crafted.jpeg(), MediaType.JPEG, 1),
    "jpeg-progressive": (lambda: crafted.jpeg(progressive=True), MediaType.JPEG, 1),
    "tiff-pillow-3-pages-little-endian": (lambda: crafted.tiff(3), MediaType.TIFF, 3),
    "tiff-1-page-uncompressed": (lambda: crafted.tiff(1, compression="raw"), MediaType.TIFF, 1),
    "tiff-3-pages-big-endian": (lambda: crafted.tiff_raw(3, byteorder=">"), MediaType.TIFF, 3),
    "tiff-4-pages-little-endian": (lambda: crafted.tiff_raw(4, byteorder="<"), MediaType.TIFF, 4),
    "webp-lossy": (lambda: crafted.webp(), MediaType.WEBP, 1),
    "webp-lossless": (lambda: crafted.webp(lossless=True), MediaType.WEBP, 1),
    "bmp-rgb": (lambda: crafted.bmp(), MediaType.BMP, 1),
    "bmp-greyscale": (lambda: crafted.bmp(mode="L"), MediaType.BMP, 1),
    "bmp-1bit": (lambda: crafted.bmp(mode="1"), MediaType.BMP, 1),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepts_each_supported_type_with_its_media_type_and_page_count(name: str) -> None:
    make, media_type, pages = ACCEPTED[name]
    data = make()
    report = validate_document(data, LIMITS)
    assert report.accepted, report.reason
    assert (report.media_type, report.pages) == (media_type, pages)
    assert report.code is None and report.reason is None
    assert_identity(report, data)


def test_big_and_little_endian_tiffs_really_differ_in_byte_order() -> None:
    assert crafted.tiff_raw(2, byteorder=">").startswith(b"MM\x00*")
    assert crafted.tiff_raw(2, byteorder="<").startswith(b"II*\x00")
    assert crafted.tiff(2).startswith(b"II*\x00")


def test_document_id_is_the_sha256_of_the_content_and_ignores_nothing() -> None:
    data = crafted.png()
    report = validate_document(data, LIMITS)
    assert report.document_id == hashlib.sha256(data).hexdigest()
    other = validate_document(data + b"\x00", LIMITS)  # trailing byte after IEND: still a PNG, new id
    assert other.accepted and other.document_id != report.document_id


def test_limits_on_the_boundary_are_inclusive() -> None:
    data = crafted.png(40, 25)
    exact = ValidationLimits(
        max_bytes=len(data), max_pixels_per_page=1000, max_dimension=40, min_dimension=25, max_pages=1
    )
    assert validate_document(data, exact).accepted
    assert validate_document(crafted.pdf(3), ValidationLimits(max_pages=3)).accepted
    assert validate_document(crafted.tiff_raw(3), ValidationLimits(max_pages=3)).accepted


# --------------------------------------------------------------------------------------------------
# Empty, too large, unsupported
# --------------------------------------------------------------------------------------------------


def test_empty_document() -> None:
    report = validate_document(b"", LIMITS)
    assert_rejected(report, RejectionCode.EMPTY)
    assert report.document_id == hashlib.sha256(b"").hexdigest() and report.size_bytes == 0


def test_too_large_is_refused_before_looking_at_the_content() -> None:
    data = crafted.png()
    report = validate_document(data, ValidationLimits(max_bytes=100))
    reason = assert_rejected(report, RejectionCode.TOO_LARGE)
    assert "100 bytes" in reason
    assert report.media_type is None  # nothing was parsed
    assert_identity(report, data)
    # Even garbage is TOO_LARGE, not CORRUPT: size comes first.
    assert validate_document(b"%PDF-" + b"\x00" * 200, ValidationLimits(max_bytes=100)).code == "TOO_LARGE"


UNSUPPORTED: dict[str, tuple[Callable[[], bytes], str]] = {
    # The function only sees bytes: a GIF "named invoice.pdf" is still a GIF.
    "html": (crafted.html, "an HTML document"),
    "zip": (crafted.zip_archive, "a ZIP archive"),
    "elf": (crafted.elf_executable, "an ELF executable"),
    "shell-script": (crafted.shell_script, "a shell script"),
    "plain-text": (crafted.plain_text, "plain text"),
    "gif-named-pdf": (crafted.gif, "a GIF image"),
    "python-script": (lambda: b"#!/usr/bin/env python3\nprint('hi')\n", "a Python script"),
    "gzip": (lambda: b"\x1f\x8b\x08\x00" + bytes(40), "a gzip archive"),
    "svg": (lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG image"),
    "text-starting-with-BM": (lambda: b"BMW service report: all good.\n", "plain text"),
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_types_are_named_and_the_accepted_types_listed(name: str) -> None:
    make, looks_like = UNSUPPORTED[name]
    data = make()
    report = validate_document(data, LIMITS)
    reason = assert_rejected(report, RejectionCode.UNSUPPORTED_TYPE)
    assert f"looks like {looks_like}." in reason
    assert ACCEPTED_TYPES in reason
    assert report.media_type is None
    assert_identity(report, data)


def test_unrecognised_binary_is_unsupported_without_a_guess() -> None:
    report = validate_document(bytes(range(256)) * 8, LIMITS)
    reason = assert_rejected(report, RejectionCode.UNSUPPORTED_TYPE)
    assert "not a recognised format" in reason and ACCEPTED_TYPES in reason


# --------------------------------------------------------------------------------------------------
# Truncated and corrupt files
# --------------------------------------------------------------------------------------------------

CORRUPT: dict[str, tuple[Callable[[], bytes], MediaType, str]] = {
    "png-truncated": (lambda: crafted.truncated(crafted.png()), MediaType.PNG, "Truncated PNG"),
    "png-without-iend": (lambda: crafted.png()[:-12], MediaType.PNG, "Truncated PNG"),
    "png-signature-only": (lambda: crafted.PNG_SIGNATURE, MediaType.PNG, "Truncated PNG"),
    "png-bad-crc": (crafted.png_bad_crc, MediaType.PNG, "CRC mismatch"),
    "png-short-image-data": (lambda: crafted.png_raw(short_by=5), MediaType.PNG, "fewer than"),
    "png-interlaced-short-image-data": (
        lambda: crafted.png_raw(37, 23, interlace=True, short_by=3),
        MediaType.PNG,
        "fewer than",
    ),
    "png-declares-big-but-holds-little": (lambda: crafted.png_declaring(5000, 5000), MediaType.PNG, "fewer than"),
    "jpeg-truncated-half": (lambda: crafted.truncated(crafted.jpeg()), MediaType.JPEG, "Truncated JPEG"),
    "jpeg-truncated-97pc": (lambda: crafted.truncated(crafted.jpeg(), 0.97), MediaType.JPEG, "Truncated JPEG"),
    "jpeg-without-eoi": (lambda: crafted.jpeg()[:-2], MediaType.JPEG, "Truncated JPEG"),
    "jpeg-progressive-truncated": (
        lambda: crafted.truncated(crafted.jpeg(progressive=True), 0.8),
        MediaType.JPEG,
        "Truncated JPEG",
    ),
    "jpeg-soi-then-zeros": (lambda: b"\xff\xd8\xff\xe0" + bytes(100), MediaType.JPEG, "Corrupt JPEG"),
    "tiff-truncated-pillow": (lambda: crafted.truncated(crafted.tiff(3)), MediaType.TIFF, "TIFF"),
    "tiff-truncated-strip-data": (
        lambda: crafted.truncated(crafted.tiff(1, 200, 200, compression="raw"), 0.5),
        MediaType.TIFF,
        "Truncated TIFF",
    ),
    "tiff-truncated-before-first-directory": (
        lambda: crafted.truncated(crafted.tiff_raw(1, 64, 64), 0.5),
        MediaType.TIFF,
        "Truncated TIFF",
    ),
    "tiff-header-only": (lambda: b"II*\x00", MediaType.TIFF, "Truncated TIFF"),
    "pdf-truncated": (lambda: crafted.truncated(crafted.pdf(3)), MediaType.PDF, "PDF"),
    "pdf-without-eof-marker": (lambda: crafted.pdf(2)[:-6], MediaType.PDF, "Truncated PDF"),
    "pdf-header-then-garbage": (crafted.pdf_header_then_garbage, MediaType.PDF, "Corrupt PDF"),
    "pdf-header-only": (lambda: b"%PDF-1.7\n", MediaType.PDF, "PDF"),
    "webp-truncated": (lambda: crafted.truncated(crafted.webp()), MediaType.WEBP, "Truncated WebP"),
    "webp-truncated-riff-size-fixed-up": (crafted.webp_cut_with_consistent_riff, MediaType.WEBP, "Corrupt WebP"),
    "bmp-truncated": (lambda: crafted.truncated(crafted.bmp()), MediaType.BMP, "Truncated BMP"),
}


@pytest.mark.parametrize("name", CORRUPT)
def test_truncated_and_corrupt_files_are_corrupt_with_a_reason(name: str) -> None:
    make, media_type, wording = CORRUPT[name]
    data = make()
    report = validate_document(data, LIMITS)
    reason = assert_rejected(report, RejectionCode.CORRUPT)
    assert wording in reason
    assert report.media_type == media_type
    assert_identity(report, data)


def test_truncated_jpeg_is_caught_even_if_someone_enabled_pillows_truncated_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The marker walk does not depend on Pillow's process-wide switch.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    report = validate_document(crafted.truncated(crafted.jpeg(), 0.9), LIMITS)
    assert_rejected(report, RejectionCode.CORRUPT)


def test_pillow_globals_are_left_alone() -> None:
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    for data in (crafted.truncated(crafted.jpeg()), crafted.png_declaring(50000, 50000), crafted.webp()):
        validate_document(data, LIMITS)
    assert before == (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --------------------------------------------------------------------------------------------------
# Encryption
# --------------------------------------------------------------------------------------------------


def test_pdf_with_a_user_password_is_encrypted() -> None:
    data = crafted.encrypted_pdf(user_password="secret")
    report = validate_document(data, LIMITS)
    reason = assert_rejected(report, RejectionCode.ENCRYPTED)
    assert "password" in reason
    assert report.media_type == MediaType.PDF
    assert_identity(report, data)


# --------------------------------------------------------------------------------------------------
# Bombs, pages, dimensions
# --------------------------------------------------------------------------------------------------


def test_png_declaring_50000_by_50000_is_refused_from_its_header_without_allocating() -> None:
    data = crafted.png_declaring(50000, 50000)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        report = validate_document(data, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    assert peak < 1_000_000  # a decode would need 7.5 GB
    reason = assert_rejected(report, RejectionCode.TOO_MANY_PIXELS)
    assert "50000x50000" in reason
    assert report.media_type == MediaType.PNG
    assert_identity(report, data)


BOMBS: dict[str, tuple[Callable[[], bytes], MediaType]] = {
    "jpeg-65000x65000": (lambda: crafted.jpeg_declaring(65000, 65000), MediaType.JPEG),
    "webp-16384x16384": (lambda: crafted.webp_declaring(16384, 16384), MediaType.WEBP),
    "bmp-50000x50000": (lambda: crafted.bmp_declaring(50000, 50000), MediaType.BMP),
    "bmp-top-down-50000x50000": (lambda: crafted.bmp_declaring(50000, -50000), MediaType.BMP),
    "tiff-50000x50000": (lambda: crafted.tiff_raw(1, sizes=[(50000, 50000)]), MediaType.TIFF),
    "pdf-page-200x200-inches": (lambda: crafted.pdf(1, 14400, 14400), MediaType.PDF),
}


@pytest.mark.parametrize("name", BOMBS)
def test_decompression_bombs_are_too_many_pixels(name: str) -> None:
    make, media_type = BOMBS[name]
    started = time.perf_counter()
    report = validate_document(make(), LIMITS)
    assert time.perf_counter() - started < 0.5
    assert_rejected(report, RejectionCode.TOO_MANY_PIXELS)
    assert report.media_type == media_type


def test_a_bomb_on_page_two_of_a_tiff_is_found() -> None:
    data = crafted.tiff_raw(2, sizes=[(32, 24), (50000, 50000)])
    reason = assert_rejected(validate_document(data, LIMITS), RejectionCode.TOO_MANY_PIXELS)
    assert "page 2" in reason


def test_pillows_own_bomb_error_becomes_too_many_pixels_not_a_crash() -> None:
    # Our limits let the image through; Pillow's global guard (~179 M pixels) refuses it when opening.
    generous = ValidationLimits(max_pixels_per_page=10**12, max_dimension=10**6)
    report = validate_document(crafted.webp_declaring(16384, 16384), generous)
    assert_rejected(report, RejectionCode.TOO_MANY_PIXELS)
    assert report.media_type == MediaType.WEBP


def test_tiff_with_thousands_of_frames_is_refused_fast() -> None:
    data = crafted.tiff_raw(5000, 16, 16)
    started = time.perf_counter()
    report = validate_document(data, LIMITS)
    assert time.perf_counter() - started < 1.0
    reason = assert_rejected(report, RejectionCode.TOO_MANY_PAGES)
    assert f"more than {LIMITS.max_pages}" in reason
    assert report.media_type == MediaType.TIFF


def test_tiff_with_more_frames_than_max_pages() -> None:
    report = validate_document(crafted.tiff(4), ValidationLimits(max_pages=3))
    assert_rejected(report, RejectionCode.TOO_MANY_PAGES)


def test_pdf_with_more_pages_than_max_pages() -> None:
    report = validate_document(crafted.pdf(4), ValidationLimits(max_pages=3))
    reason = assert_rejected(report, RejectionCode.TOO_MANY_PAGES)
    assert "4 pages" in reason and "limit of 3" in reason
    assert report.media_type == MediaType.PDF


@pytest.mark.parametrize(
    "make",
    [
        lambda: crafted.png(1, 1),
        lambda: crafted.jpeg(1, 1),
        lambda: crafted.webp(1, 1),
        lambda: crafted.bmp(1, 1),
        lambda: crafted.tiff(1, 1, 1),
        lambda: crafted.png(200, 8),
    ],
    ids=["png-1x1", "jpeg-1x1", "webp-1x1", "bmp-1x1", "tiff-1x1", "png-200x8"],
)
def test_tiny_images_have_bad_dimensions(make: Callable[[], bytes]) -> None:
    reason = assert_rejected(validate_document(make(), LIMITS), RejectionCode.BAD_DIMENSIONS)
    assert "between 16 and 20,000 pixels" in reason


def test_a_very_long_side_has_bad_dimensions_even_with_few_pixels() -> None:
    report = validate_document(crafted.jpeg_declaring(30000, 100), LIMITS)
    reason = assert_rejected(report, RejectionCode.BAD_DIMENSIONS)
    assert "30000x100" in reason


def test_pdf_pages_are_measured_at_the_render_resolution() -> None:
    banner = crafted.pdf(1, 8000, 200)  # 111 x 2.8 inches: 22 223 pixels wide at 200 dpi
    assert_rejected(validate_document(banner, LIMITS), RejectionCode.BAD_DIMENSIONS)
    assert validate_document(banner, ValidationLimits(render_dpi=72)).accepted
    stamp = crafted.pdf(1, 4, 4)  # 4 points = 12 pixels at 200 dpi
    assert_rejected(validate_document(stamp, LIMITS), RejectionCode.BAD_DIMENSIONS)


# --------------------------------------------------------------------------------------------------
# Never raises
# --------------------------------------------------------------------------------------------------

SEEDS = {
    "pdf": lambda: crafted.pdf(2),
    "png": lambda: crafted.png(),
    "jpeg": lambda: crafted.jpeg(),
    "jpeg-progressive": lambda: crafted.jpeg(progressive=True),
    "tiff": lambda: crafted.tiff(2),
    "tiff-big-endian": lambda: crafted.tiff_raw(2),
    "webp": lambda: crafted.webp(),
    "bmp": lambda: crafted.bmp(),
}


@pytest.mark.parametrize("name", SEEDS)
def test_mangled_files_never_raise_and_always_give_a_consistent_report(name: str) -> None:
    seed = SEEDS[name]()
    rng = random.Random(name)
    variants = [seed[:cut] for cut in range(1, len(seed), max(1, len(seed) // 40))]
    for _ in range(60):
        mangled = bytearray(seed)
        for _ in range(rng.randint(1, 8)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        variants.append(bytes(mangled))
    started = time.perf_counter()
    for data in variants:
        report = validate_document(data, LIMITS)
        assert report.accepted == (report.code is None)
        assert report.accepted or (report.reason and report.reason.endswith("."))
        assert report.document_id == hashlib.sha256(data).hexdigest()
    assert time.perf_counter() - started < 10
