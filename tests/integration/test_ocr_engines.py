"""Both OCR engines behind the one interface read the same page alike; the in-process one is the default."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from docflow.domain.extraction import default_engine, extract_text
from docflow.domain.ocr import OcrEngine, OcrLanguageError, TesseractEngine, TesserocrEngine
from docflow.samples import LETTER, render_page
from docflow.values import MediaType, OcrOptions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def page() -> Image.Image:
    return render_page(LETTER)


def _words(text: str) -> set[str]:
    return {w.strip(".,:").lower() for w in text.split() if len(w) > 3}


def test_engines_agree_on_a_clean_page(page: Image.Image) -> None:
    options = OcrOptions()
    cli = TesseractEngine().recognize(page, options)
    lib = TesserocrEngine().recognize(page, options)
    assert "whitfield" in _words(lib.text) and "sincerely" in _words(lib.text)
    overlap = len(_words(cli.text) & _words(lib.text)) / len(_words(cli.text))
    assert overlap > 0.9
    assert lib.confidence is not None and lib.confidence > 80
    assert abs(lib.words - cli.words) <= max(3, cli.words // 20)


def test_scan_claiming_72_dpi_is_still_read(page: Image.Image) -> None:
    # Scans often carry a bogus 72 dpi; the engine must not let it shrink the page to nothing
    low = page.resize((850, 1100))
    low.info["dpi"] = (72, 72)
    result = TesserocrEngine().recognize(low.resize((1700, 2200)), OcrOptions())
    assert result.words > 50


def test_missing_language_names_the_package() -> None:
    with pytest.raises(OcrLanguageError, match="tesseract-ocr-deu"):
        TesserocrEngine().recognize(Image.new("L", (100, 100), 255), OcrOptions(languages="deu"))


def test_default_engine_is_in_process() -> None:
    assert isinstance(default_engine(), TesserocrEngine)


@pytest.mark.parametrize("engine", [TesserocrEngine(), TesseractEngine()], ids=["tesserocr", "cli"])
def test_engines_tell_which_way_up_a_page_is(engine: OcrEngine, page: Image.Image) -> None:
    upright = engine.detect_orientation(page, OcrOptions())
    assert upright is not None and upright.degrees == 0
    for turn, back in ((Image.Transpose.ROTATE_90, 270), (Image.Transpose.ROTATE_180, 180)):
        found = engine.detect_orientation(page.transpose(turn), OcrOptions())
        assert found is not None and found.degrees == back and found.confidence >= 2.0, (turn, found)
    # a blank page has nothing to tell by
    assert engine.detect_orientation(Image.new("L", (800, 1000), 255), OcrOptions()) is None


@pytest.mark.parametrize("engine", [TesserocrEngine(), TesseractEngine()], ids=["tesserocr", "cli"])
def test_a_page_scanned_sideways_is_read_upright(engine: OcrEngine, page: Image.Image) -> None:
    buffer = io.BytesIO()
    page.transpose(Image.Transpose.ROTATE_90).save(buffer, format="PNG")
    read = extract_text(buffer.getvalue(), MediaType.PNG, OcrOptions(), engine).pages[0]
    assert read.rotated == 270 and {"whitfield", "sincerely"} <= _words(read.text)
    assert read.confidence is not None and read.confidence > 80
    as_scanned = extract_text(buffer.getvalue(), MediaType.PNG, OcrOptions(orientation_check_below=0), engine)
    assert as_scanned.pages[0].rotated == 0 and "whitfield" not in _words(as_scanned.pages[0].text)


def test_a_scanned_pdf_page_upside_down_is_read_upright(page: Image.Image) -> None:
    buffer = io.BytesIO()
    page.transpose(Image.Transpose.ROTATE_180).convert("RGB").save(buffer, format="PDF", resolution=100)
    read = extract_text(buffer.getvalue(), MediaType.PDF, OcrOptions()).pages[0]
    assert read.source == "ocr" and read.rotated == 180 and "whitfield" in _words(read.text)
