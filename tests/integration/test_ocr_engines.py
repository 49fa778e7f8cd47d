"""Both OCR engines behind the one interface read the same page alike; the in-process one is the default."""

from __future__ import annotations

import pytest
from PIL import Image

from docflow.domain.extraction import default_engine
from docflow.domain.ocr import OcrLanguageError, TesseractEngine, TesserocrEngine
from docflow.models import OcrOptions
from docflow.samples import LETTER, render_page

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
