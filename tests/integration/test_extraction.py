"""ExtractText with the real Tesseract and pdfium, on generated documents and on the shared dev data.

The shared data is found through DOCFLOW_DATA_DIR or <repo>/../shared/data; tests that need it are skipped
with a message when it is absent. The whole module is skipped when the tesseract binary is missing.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import jiwer
import pytest
from PIL import Image, ImageDraw, ImageFont

from docflow.domain.extraction import extract_text
from docflow.domain.ocr import (
    OcrEngine,
    OcrLanguageError,
    OcrPage,
    OcrTimeoutError,
    TesseractEngine,
    TesseractNotFoundError,
)
from docflow.values import MediaType, OcrOptions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary not installed"),
]

REPO = Path(__file__).resolve().parents[2]
OPTIONS = OcrOptions()
DEJAVU_CANDIDATES = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
]


class SpyEngine(OcrEngine):
    """The real engine, counting the pages it is asked to read."""

    def __init__(self) -> None:
        self.inner = TesseractEngine()
        self.calls = 0

    def recognize(self, image: Image.Image, options: OcrOptions) -> OcrPage:
        self.calls += 1
        return self.inner.recognize(image, options)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    root = Path(os.environ.get("DOCFLOW_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (root / "dev").is_dir():
        pytest.skip(f"shared data not found at {root} (set DOCFLOW_DATA_DIR to the data root)")
    return root


def dejavu_path() -> str | None:
    for candidate in DEJAVU_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    if shutil.which("fc-match"):
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", "DejaVu Sans"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found.endswith(".ttf") and "DejaVu" in found and Path(found).is_file():
            return found
    return None


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = dejavu_path()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def text_page(lines: list[str], size: tuple[int, int] = (1700, 2200), font_px: int = 48) -> Image.Image:
    """A white page with black text lines (letter at 200 dpi by default)."""
    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    face = font(font_px)
    for i, line in enumerate(lines):
        draw.text((120, 150 + i * int(font_px * 1.8)), line, fill=0, font=face)
    return page


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


def words_of(text: str) -> set[str]:
    return {w.strip(".,:;").lower() for w in text.split()}


# -- (a) text layer, (b) image-only PDF ------------------------------------------------------------------


def test_pdf_text_layer_is_used_and_nothing_is_ocrd():
    data = make_text_pdf(
        [
            ["INVOICE 2024-117", "Customer: Acme Widgets Limited", "Total due: 1,250.00 EUR"],
            ["Payment terms: thirty days net", "Thank you for your business"],
        ]
    )
    spy = SpyEngine()
    result = extract_text(data, MediaType.PDF, OPTIONS, engine=spy)
    assert spy.calls == 0
    assert [p.source for p in result.pages] == ["pdf_text", "pdf_text"]
    assert {"invoice", "acme", "widgets", "1,250.00"} <= words_of(result.pages[0].text)
    assert "thirty days net" in result.pages[1].text
    assert all(p.confidence is None for p in result.pages)


def test_image_only_pdf_is_ocrd():
    page = text_page(["Quarterly sales report", "Northern region results", "Prepared for the board"])
    buf = io.BytesIO()
    page.save(buf, "PDF", resolution=200.0)
    spy = SpyEngine()
    result = extract_text(buf.getvalue(), MediaType.PDF, OPTIONS, engine=spy)
    assert spy.calls == 1
    (only,) = result.pages
    assert only.source == "ocr"
    assert {"quarterly", "sales", "report", "northern", "region", "board"} <= words_of(only.text)
    assert only.confidence is not None and only.confidence > 80
    assert only.seconds > 0


# -- (c) real scans ----------------------------------------------------------------------------------


def test_funsd_form_cer_and_confidence(data_dir: Path):
    # A one-column FUNSD form: its transcription's box order is close to reading order, so CER measures
    # recognition (0.08 with Tesseract 5.3 and the default options; bench/ocr_cer.py covers all 50 forms).
    funsd = data_dir / "dev" / "funsd"
    reference = " ".join((funsd / "gt_text" / "85201976.txt").read_text(encoding="utf-8").split())
    result = extract_text((funsd / "form" / "85201976.png").read_bytes(), MediaType.PNG, OPTIONS)
    (page,) = result.pages
    assert page.source == "ocr"
    assert page.words > 50
    assert page.confidence is not None and page.confidence > 70
    cer = jiwer.cer(reference, " ".join(page.text.split()))
    assert cer < 0.3, f"CER {cer:.3f}"


def test_rvlcdip_letter_scan(data_dir: Path):
    scan = data_dir / "dev" / "rvlcdip_samples_rishidarkdevil" / "letter" / "letter.png"
    result = extract_text(scan.read_bytes(), MediaType.PNG, OPTIONS)
    (page,) = result.pages
    assert page.words > 200
    assert page.confidence is not None and page.confidence > 75
    assert {"proposed", "analytical", "plan", "direct", "marketing"} <= words_of(page.text)


# -- (d) born-digital invoices ----------------------------------------------------------------------


def test_invoice2data_pdfs_use_their_text_layer(data_dir: Path):
    pdfs = sorted((data_dir / "dev" / "invoice2data" / "invoice").glob("*.pdf"))
    if not pdfs:
        pytest.skip("no invoice2data PDFs in the shared data")
    spy = SpyEngine()
    for pdf in pdfs:
        result = extract_text(pdf.read_bytes(), MediaType.PDF, OPTIONS, engine=spy)
        assert result.pages, pdf.name
        assert all(p.source == "pdf_text" for p in result.pages), pdf.name
        assert sum(p.words for p in result.pages) > 40, pdf.name
    assert spy.calls == 0


# -- (e) multi-page TIFF ------------------------------------------------------------------------------


def test_multi_page_tiff_gives_one_page_per_frame():
    frames = [
        text_page(["First page about apples"], size=(1100, 320)),
        text_page(["Second page about oranges"], size=(1100, 320)).convert("1"),
        text_page(["Third page about bananas"], size=(1100, 320)).convert("RGB"),
    ]
    options = OcrOptions(upscale_below_height=0)  # clean 48-px text: no upscale needed, keeps the test fast
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:], compression="tiff_deflate")
    result = extract_text(buf.getvalue(), MediaType.TIFF, options)
    assert [p.page for p in result.pages] == [1, 2, 3]
    for page, fruit in zip(result.pages, ["apples", "oranges", "bananas"], strict=True):
        assert page.source == "ocr"
        assert fruit in words_of(page.text)
    last_two = extract_text(buf.getvalue(), MediaType.TIFF, options, first_page=2)
    assert [p.page for p in last_two.pages] == [2, 3]


# -- (f) languages, errors, threads --------------------------------------------------------------------


def test_russian_text_is_recognised():
    if dejavu_path() is None:
        pytest.skip("no DejaVu Sans font with Cyrillic glyphs (Debian: apt-get install fonts-dejavu-core)")
    if "rus" not in TesseractEngine().available_languages:
        pytest.skip("Tesseract rus data not installed (Debian: apt-get install tesseract-ocr-rus)")
    image = text_page(["Счёт на оплату услуг", "Договор поставки оборудования"], size=(1700, 600))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    result = extract_text(buf.getvalue(), MediaType.PNG, OcrOptions(languages="rus"))
    assert {"счёт", "оплату", "услуг", "договор", "поставки", "оборудования"} <= words_of(result.text)


def test_missing_language_names_the_package():
    engine = TesseractEngine()
    with pytest.raises(OcrLanguageError, match="tesseract-ocr-klingon"):
        engine.recognize(Image.new("L", (100, 100), 255), OcrOptions(languages="eng+klingon"))


def test_missing_binary_says_what_to_install():
    engine = TesseractEngine(tesseract_cmd="no-such-tesseract-binary")
    with pytest.raises(TesseractNotFoundError, match="apt-get install tesseract-ocr"):
        engine.recognize(Image.new("L", (100, 100), 255), OPTIONS)


def test_timeout_kills_the_page():
    page = text_page(["timeout " * 8] * 30, size=(2550, 3300), font_px=36)
    with pytest.raises(OcrTimeoutError, match=r"more than 0\.05 s"):
        TesseractEngine().recognize(page, OcrOptions(timeout_seconds=0.05))


def test_tesseract_always_runs_single_threaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMP_THREAD_LIMIT", "4")  # the caller's environment says otherwise
    seen = tmp_path / "omp.txt"
    wrapper = tmp_path / "tesseract"
    wrapper.write_text(f'#!/bin/sh\necho "$OMP_THREAD_LIMIT" >> {seen}\nexec {shutil.which("tesseract")} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    engine = TesseractEngine(tesseract_cmd=str(wrapper))
    page = engine.recognize(text_page(["Single threaded"], size=(1000, 300)), OPTIONS)
    assert "threaded" in words_of(page.text)
    assert set(seen.read_text().split()) == {"1"}
    assert os.environ["OMP_THREAD_LIMIT"] == "4"  # and the caller's environment is left alone
