"""ExtractText decisions without Tesseract: page ranges, text-layer detection, modes, upscaling, routing.

OCR is replaced by a recording fake engine; PDFs are written by hand (text layer) or by PIL (image only).
"""

from __future__ import annotations

import io

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw

from docflow.domain.extraction import (
    MAX_OCR_PIXELS,
    DocumentReadError,
    PageRangeError,
    extract_text,
    has_text_layer,
    meaningful_chars,
    prepare_for_ocr,
    recognize_upright,
    resolve_page_range,
    should_check_orientation,
    to_ocr_mode,
    turn_for,
    upscale_factor,
)
from docflow.domain.ocr import OcrEngine, OcrPage, OcrTimeoutError, Orientation, TesseractEngine, parse_osd, parse_tsv
from docflow.settings import Settings
from docflow.values import MediaType, OcrOptions

pytestmark = pytest.mark.unit

OPTIONS = OcrOptions()


class FakeEngine(OcrEngine):
    """Records what it was asked to read; answers with the image size."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, int]]] = []

    def recognize(self, image: Image.Image, options: OcrOptions) -> OcrPage:
        self.calls.append((image.mode, image.size))
        return OcrPage(text=f"fake {image.width}x{image.height}", confidence=90.0, words=2)


def make_text_pdf(pages: list[list[str]]) -> bytes:
    """A minimal PDF whose pages show the given lines in Helvetica (a real text layer), US letter."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    page_ids = [4 + 2 * i for i in range(len(pages))]
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for pid, lines in zip(page_ids, pages, strict=True):
        stream = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({esc(s)}) Tj T*" for s in lines) + " ET"
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {pid + 1} 0 R >>".encode()
        )
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream".encode())
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def image_pdf(n_pages: int = 1) -> bytes:
    """Image-only PDF (no text layer): letter pages at 100 dpi."""
    frames = [Image.new("L", (850, 1100), 255) for _ in range(n_pages)]
    for f in frames:
        ImageDraw.Draw(f).rectangle((100, 100, 400, 140), fill=0)
    buf = io.BytesIO()
    frames[0].save(buf, "PDF", resolution=100.0, save_all=True, append_images=frames[1:])
    return buf.getvalue()


def merge_pdfs(*docs: bytes) -> bytes:
    dest = pdfium.PdfDocument.new()
    try:
        for data in docs:
            src = pdfium.PdfDocument(data)
            dest.import_pages(src)
            src.close()
        buf = io.BytesIO()
        dest.save(buf)
        return buf.getvalue()
    finally:
        dest.close()


def multi_frame_tiff(sizes: list[tuple[int, int]]) -> bytes:
    frames = [Image.new("L", size, 255) for size in sizes]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


# -- page range ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "count", "expected"),
    [
        (1, None, 5, range(0, 5)),
        (2, 4, 5, range(1, 4)),
        (5, 5, 5, range(4, 5)),
        (3, None, 3, range(2, 3)),
    ],
)
def test_page_range_valid(first, last, count, expected):
    assert resolve_page_range(first, last, count) == expected


@pytest.mark.parametrize(
    ("first", "last", "count", "message"),
    [
        (0, None, 5, ">= 1"),
        (-1, 2, 5, ">= 1"),
        (3, 2, 5, "before first_page"),
        (1, 6, 5, "exceeds"),
        (6, None, 5, "before first_page"),
        (1, None, 0, "no pages"),
        (True, None, 5, "int"),
        (1.0, None, 5, "int"),
        (1, "3", 5, "int"),
    ],
)
def test_page_range_invalid(first, last, count, message):
    with pytest.raises(PageRangeError, match=message):
        resolve_page_range(first, last, count)


def test_page_range_error_is_a_value_error():
    assert issubclass(PageRangeError, ValueError)


# -- text layer ------------------------------------------------------------------------------------


def test_meaningful_chars_ignores_whitespace_controls_and_unmapped_glyphs():
    assert meaningful_chars(" a b\r\n\tc\x00\x01\ufffd\ufffd ") == 3
    assert meaningful_chars("Привет, мир") == 10


def test_text_layer_threshold_is_inclusive():
    assert has_text_layer("x" * 20, 20)
    assert not has_text_layer("x" * 19 + " " * 50, 20)
    assert not has_text_layer("\ufffd" * 100, 20)  # glyphs without unicode mapping are no text layer
    assert not has_text_layer("", 0)  # a zero threshold still needs one character


# -- modes and upscaling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "options", "expected"),
    [
        (1000, OcrOptions(), 2.0),  # an RVL-CDIP scan: the full factor
        (1500, OcrOptions(), 2.0),
        (1799, OcrOptions(), 3000 / 1799),  # towards the target height, not past it
        (1800, OcrOptions(), 1.0),
        (3300, OcrOptions(), 1.0),
        (1000, OcrOptions(upscale_factor=3.0), 3.0),
        (1100, OcrOptions(upscale_factor=3.0), 3000 / 1100),
        (500, OcrOptions(upscale_factor=3.0), 3.0),  # capped at upscale_factor
        (1000, OcrOptions(upscale_factor=1.0), 1.0),
        (1000, OcrOptions(upscale_below_height=0), 1.0),
        (1000, OcrOptions(upscale_target_height=900), 1.0),  # already past the target: left alone
    ],
)
def test_upscale_decision(height, options, expected):
    assert upscale_factor(height, options) == pytest.approx(expected)


def test_upscale_never_takes_a_wide_frame_past_the_ocr_pixel_cap():
    # 1000 x 10,000 px (a long strip): 2x would make 40 Mpx; the factor stops at MAX_OCR_PIXELS (20 Mpx).
    factor = upscale_factor(1000, OcrOptions(), width=10_000)
    assert factor == pytest.approx((MAX_OCR_PIXELS / 10_000_000) ** 0.5)
    assert upscale_factor(1000, OcrOptions(), width=20_000) == 1.0  # already at the cap: left alone


def test_upscale_factor_is_a_setting(monkeypatch):
    assert Settings().ocr.upscale_factor == 2.0
    monkeypatch.setenv("DOCFLOW_OCR_UPSCALE_FACTOR", "3")
    assert upscale_factor(1000, Settings().ocr) == 3.0
    monkeypatch.setenv("DOCFLOW_OCR_UPSCALE_FACTOR", "0.5")
    with pytest.raises(ValueError, match="ocr_upscale_factor"):
        Settings()


def test_prepare_upscales_low_resolution_with_lanczos_and_keeps_large_pages():
    small = prepare_for_ocr(Image.new("L", (754, 1000), 255), OPTIONS)
    assert small.size == (1508, 2000)
    assert prepare_for_ocr(Image.new("L", (754, 1000), 255), OcrOptions(upscale_factor=3.0)).size == (2262, 3000)
    large = Image.new("L", (2550, 3300), 255)
    assert prepare_for_ocr(large, OPTIONS).size == (2550, 3300)
    assert prepare_for_ocr(Image.new("L", (754, 1000)), OPTIONS, allow_upscale=False).size == (754, 1000)


def test_modes_keep_gray_and_rgb():
    gray = Image.new("L", (4, 4), 7)
    assert to_ocr_mode(gray) is gray
    assert to_ocr_mode(Image.new("RGB", (4, 4))).mode == "RGB"
    assert to_ocr_mode(Image.new("1", (4, 4), 1)).mode == "L"


def test_transparency_is_flattened_onto_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    out = to_ocr_mode(rgba)
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (10, 20, 30)
    la = to_ocr_mode(Image.new("LA", (4, 4), (0, 0)))
    assert la.mode == "L"
    assert la.getpixel((0, 0)) == 255


def test_palette_images():
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([200, 10, 10] + [0, 0, 0] * 255)
    out = to_ocr_mode(pal)
    assert (out.mode, out.getpixel((0, 0))) == ("RGB", (200, 10, 10))
    pal.info["transparency"] = 0
    assert to_ocr_mode(pal).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_becomes_rgb():
    out = to_ocr_mode(Image.new("CMYK", (4, 4), (0, 0, 0, 255)))
    assert (out.mode, out.getpixel((0, 0))) == ("RGB", (0, 0, 0))


def _ramp(mode: str) -> Image.Image:
    """A 4x4 image, mostly 60000 (0.9 for float) with one dark pixel at 1000 (0.1) in the corner."""
    if mode == "F":
        arr = np.full((4, 4), 0.9, dtype=np.float32)
        arr[0, 0] = 0.1
        return Image.fromarray(arr)
    arr16 = np.full((4, 4), 60000, dtype=np.uint16)
    arr16[0, 0] = 1000
    img = Image.fromarray(arr16)  # mode I;16
    return img if mode == "I;16" else img.convert("I")


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_is_stretched_not_clipped(mode):
    img = _ramp(mode)
    assert img.mode == mode
    out = to_ocr_mode(img)
    assert out.mode == "L"
    assert out.getpixel((0, 0)) == 0  # darkest → black
    assert out.getpixel((1, 1)) == 255  # brightest → white (plain convert("L") would clip I;16 to 255 everywhere)


def test_flat_high_bit_depth_image_is_white():
    out = to_ocr_mode(Image.fromarray(np.full((3, 3), 513, dtype=np.uint16)))
    assert out.getpixel((0, 0)) == 255


# -- TSV parsing -----------------------------------------------------------------------------------


def test_parse_tsv_rebuilds_lines_and_paragraphs_and_averages_word_confidence():
    head = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [
        "1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t",
        "5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tHello",
        "5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t80\tworld",
        "5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t70\tsecond",
        "5\t1\t1\t1\t2\t2\t0\t0\t1\t1\t95\t ",  # blank word: ignored
        "5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t-1\tnext",  # no confidence: counted as a word, not in the mean
    ]
    page = parse_tsv("\n".join([head, *rows]) + "\n")
    assert page.text == "Hello world\nsecond\n\nnext"
    assert page.words == 4
    assert page.confidence == pytest.approx(80.0)


def test_parse_tsv_without_words():
    page = parse_tsv("level\tpage_num\n1\t1\t0\t0\t0\t0\t0\t0\t1\t1\t-1\t\n")
    assert (page.text, page.words, page.confidence) == ("", 0, None)


# -- routing with a fake engine ----------------------------------------------------------------------


def test_pdf_text_layer_is_used_without_ocr():
    engine = FakeEngine()
    data = make_text_pdf([["Quarterly report for the board"], ["Second page with enough words here"]])
    result = extract_text(data, MediaType.PDF, OPTIONS, engine=engine)
    assert engine.calls == []
    assert [p.source for p in result.pages] == ["pdf_text", "pdf_text"]
    assert [p.page for p in result.pages] == [1, 2]
    assert "Quarterly report" in result.pages[0].text
    assert result.pages[0].confidence is None
    assert result.pages[0].words == 5


def test_short_text_layer_counts_as_scanned_page():
    engine = FakeEngine()
    result = extract_text(make_text_pdf([["p. 7"]]), MediaType.PDF, OPTIONS, engine=engine)
    assert result.pages[0].source == "ocr"
    assert engine.calls == [("RGB", (1700, 2200))]  # letter rendered at 200 dpi, never upscaled


def test_image_pdf_is_rendered_at_render_dpi_and_ocrd():
    engine = FakeEngine()
    result = extract_text(image_pdf(2), MediaType.PDF, OcrOptions(render_dpi=150), engine=engine)
    assert [p.source for p in result.pages] == ["ocr", "ocr"]
    for _, (width, height) in engine.calls:  # 8.5 x 11 in at 150 dpi, give or take pdfium's rounding
        assert abs(width - 1275) <= 1 and abs(height - 1650) <= 1
    assert result.pages[0].confidence == 90.0


def test_mixed_pdf_and_page_range_only_touch_requested_pages():
    data = merge_pdfs(make_text_pdf([["A page that has a genuine text layer"]]), image_pdf(2))
    engine = FakeEngine()
    full = extract_text(data, MediaType.PDF, OPTIONS, engine=engine)
    assert [p.source for p in full.pages] == ["pdf_text", "ocr", "ocr"]
    assert full.text_source == "mixed"
    engine = FakeEngine()
    part = extract_text(data, MediaType.PDF, OPTIONS, engine=engine, first_page=3, last_page=3)
    assert [p.page for p in part.pages] == [3]
    assert len(engine.calls) == 1
    with pytest.raises(PageRangeError):
        extract_text(data, MediaType.PDF, OPTIONS, engine=engine, first_page=2, last_page=4)


def test_multi_frame_tiff_gives_one_page_per_frame_and_upscales_small_frames():
    engine = FakeEngine()
    data = multi_frame_tiff([(754, 1000), (2550, 3300), (400, 500)])
    result = extract_text(data, MediaType.TIFF, OPTIONS, engine=engine)
    assert [p.page for p in result.pages] == [1, 2, 3]
    assert [size for _, size in engine.calls] == [(1508, 2000), (2550, 3300), (800, 1000)]
    engine = FakeEngine()
    result = extract_text(data, MediaType.TIFF, OPTIONS, engine=engine, first_page=2)
    assert [p.page for p in result.pages] == [2, 3]
    assert len(engine.calls) == 2


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (300, 100), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    engine = FakeEngine()
    extract_text(buf.getvalue(), MediaType.JPEG, OcrOptions(upscale_factor=1.0), engine=engine)
    assert engine.calls == [("RGB", (100, 300))]


@pytest.mark.parametrize("media_type", [MediaType.PDF, MediaType.PNG])
def test_unreadable_bytes_raise_document_read_error(media_type):
    with pytest.raises(DocumentReadError):
        extract_text(b"definitely not a document", media_type, OPTIONS, engine=FakeEngine())


def test_jpeg_extra_frames_are_not_pages():
    buf = io.BytesIO()  # an MPO: what phone cameras write, a JPEG with a second (preview) image
    Image.new("RGB", (300, 200), "white").save(
        buf, "MPO", save_all=True, append_images=[Image.new("RGB", (30, 20), "white")]
    )
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    engine = FakeEngine()
    result = extract_text(buf.getvalue(), MediaType.JPEG, OPTIONS, engine=engine)
    assert [p.page for p in result.pages] == [1]
    assert engine.calls == [("RGB", (600, 400))]


# -- orientation ----------------------------------------------------------------------------------------

OSD_OUTPUT = """Page number: 0
Orientation in degrees: 270
Rotate: 90
Orientation confidence: 11.16
Script: Latin
Script confidence: 3.94
"""


def test_osd_output_is_parsed():
    assert parse_osd(OSD_OUTPUT) == Orientation(270, 11.16)
    assert parse_osd("Too few characters. Skipping this page\n") is None
    assert parse_osd("") is None


TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


class SidewaysEngine(OcrEngine):
    """A page that reads as garbage as scanned and well only once turned by OSD's answer, the right
    way: a marker pixel (black, top-left of the scan) tells it exactly how the image it is given was
    turned, so a page turned the wrong way (or not at all) still reads as garbage."""

    def __init__(self, orientation: Orientation | None, turned_reads: float = 90.0) -> None:
        self.orientation = orientation
        self.turned_reads = turned_reads
        degrees = orientation.degrees if orientation else 0
        self.upright = self.page().transpose(TURNS[degrees]) if degrees in TURNS else None
        self.read: list[str] = []  # "scan", "upright" or "wrong" for each recognize call
        self.asked = 0
        self.timeouts: list[float] = []  # the time limit each call was given

    @staticmethod
    def page() -> Image.Image:
        image = Image.new("L", (40, 20), 255)
        image.putpixel((0, 0), 0)  # the page as scanned: marker top-left
        return image

    def recognize(self, image: Image.Image, options: OcrOptions) -> OcrPage:
        self.timeouts.append(options.timeout_seconds)
        if image.tobytes() == self.page().tobytes() and image.size == (40, 20):
            self.read.append("scan")
            return OcrPage(text="gArbLe ~~ |||", confidence=31.0, words=3)
        if self.upright is not None and image.size == self.upright.size and image.tobytes() == self.upright.tobytes():
            self.read.append("upright")
            return OcrPage(text="Dear Sir, thank you", confidence=self.turned_reads, words=4)
        self.read.append("wrong")
        return OcrPage(text="~~ ||| ~~", confidence=10.0, words=3)

    def detect_orientation(self, image: Image.Image, options: OcrOptions) -> Orientation | None:
        self.asked += 1
        self.timeouts.append(options.timeout_seconds)
        return self.orientation


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_sideways_page_is_read_again_upright(degrees):
    engine = SidewaysEngine(Orientation(degrees, 6.0))
    page, rotated = recognize_upright(engine, SidewaysEngine.page(), OPTIONS)
    assert (page.text, rotated) == ("Dear Sir, thank you", degrees)
    assert engine.read == ["scan", "upright"] and engine.asked == 1
    # the check and the second reading only get what is left of the page's time limit
    assert engine.timeouts[0] == OPTIONS.timeout_seconds
    assert all(t <= OPTIONS.timeout_seconds for t in engine.timeouts[1:])


class SlowSecondReading(SidewaysEngine):
    def recognize(self, image: Image.Image, options: OcrOptions) -> OcrPage:
        if self.read:
            self.read.append("timed out")
            raise OcrTimeoutError("too slow")
        return super().recognize(image, options)


def test_a_second_reading_out_of_time_leaves_the_first():
    engine = SlowSecondReading(Orientation(90, 6.0))
    page, rotated = recognize_upright(engine, SidewaysEngine.page(), OPTIONS)
    assert (page.text, rotated) == ("gArbLe ~~ |||", 0) and engine.read == ["scan", "timed out"]


def test_no_second_reading_without_time_left_for_it():
    engine = SidewaysEngine(Orientation(90, 6.0))
    page, rotated = recognize_upright(engine, SidewaysEngine.page(), OcrOptions(timeout_seconds=0.5))
    assert (page.text, rotated) == ("gArbLe ~~ |||", 0) and engine.read == ["scan"]


def test_the_cli_engine_without_osd_data_reads_pages_as_they_come(caplog):
    from docflow.domain import ocr

    engine = TesseractEngine()
    engine.__dict__["available_languages"] = frozenset({"eng"})  # as if tesseract-ocr-osd were missing
    ocr._warned.clear()
    with caplog.at_level("WARNING", logger="docflow.domain.ocr"):
        assert engine.detect_orientation(SidewaysEngine.page(), OPTIONS) is None
        assert engine.detect_orientation(SidewaysEngine.page(), OPTIONS) is None
    assert caplog.text.count("tesseract-ocr-osd") == 1  # said once, not per page


@pytest.mark.parametrize(
    "orientation",
    [None, Orientation(0, 9.0), Orientation(180, 1.0), Orientation(45, 9.0)],
    ids=["osd-cannot-tell", "osd-says-upright", "osd-unsure", "not-a-right-angle"],
)
def test_a_poor_page_is_kept_as_read_unless_osd_is_sure(orientation):
    engine = SidewaysEngine(orientation)
    page, rotated = recognize_upright(engine, SidewaysEngine.page(), OPTIONS)
    assert (page.text, rotated) == ("gArbLe ~~ |||", 0)
    assert engine.read == ["scan"]


def test_the_turned_reading_is_kept_only_if_more_confident():
    engine = SidewaysEngine(Orientation(180, 6.0), turned_reads=20.0)
    page, rotated = recognize_upright(engine, SidewaysEngine.page(), OPTIONS)
    assert (page.text, rotated) == ("gArbLe ~~ |||", 0) and engine.read == ["scan", "upright"]


def test_a_page_that_reads_well_is_never_checked():
    engine = FakeEngine()  # confidence 90
    page, rotated = recognize_upright(engine, Image.new("L", (40, 20), 255), OPTIONS)
    assert (page.text, rotated) == ("fake 40x20", 0) and len(engine.calls) == 1
    sideways = SidewaysEngine(Orientation(90, 6.0))
    off = OcrOptions(orientation_check_below=0)
    assert recognize_upright(sideways, SidewaysEngine.page(), off)[1] == 0 and sideways.asked == 0


def test_orientation_decisions():
    assert should_check_orientation(OcrPage("", None, 0), OPTIONS)  # no words at all
    assert should_check_orientation(OcrPage("x", 49.9, 1), OPTIONS)
    assert not should_check_orientation(OcrPage("x", 50.0, 1), OPTIONS)
    assert not should_check_orientation(OcrPage("", None, 0), OcrOptions(orientation_check_below=0))
    assert turn_for(Orientation(270, 2.0), OPTIONS) == 270
    assert turn_for(Orientation(270, 1.9), OPTIONS) == 0
    assert turn_for(None, OPTIONS) == 0


def test_the_orientation_check_is_a_setting(monkeypatch):
    assert Settings().ocr.orientation_check_below == 50.0
    monkeypatch.setenv("DOCFLOW_OCR_ORIENTATION_CHECK_BELOW", "0")
    assert Settings().ocr.orientation_check_below == 0.0
    monkeypatch.setenv("DOCFLOW_OCR_ORIENTATION_CHECK_BELOW", "101")
    with pytest.raises(ValueError, match="ocr_orientation_check_below"):
        Settings()


def test_extracted_pages_say_how_they_were_turned():
    buffer = io.BytesIO()
    SidewaysEngine.page().save(buffer, format="PNG")
    as_is = OcrOptions(upscale_factor=1.0)  # the engine must see the pixels as saved
    result = extract_text(buffer.getvalue(), MediaType.PNG, as_is, SidewaysEngine(Orientation(270, 8.0)))
    assert result.pages[0].rotated == 270 and result.pages[0].text == "Dear Sir, thank you"
