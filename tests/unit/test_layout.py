"""Layout features from Tesseract's word boxes and the page image (docflow.domain.layout)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from docflow.domain.layout import FEATURE_NAMES, WordBox, ink_layout, page_layout, text_layout, words_from_tsv
from docflow.domain.ocr import TSV_HEADER, parse_tsv

pytestmark = pytest.mark.unit

W, H = 1000, 1300


def tsv_of(words: list[tuple[int, int, int, int, str]], page: tuple[int, int] = (W, H), conf: float = 91.0) -> str:
    """Tesseract-style TSV: a page row, then one word row per (block, line, left, top, text); 40 px wide,
    20 px tall words unless the text says otherwise."""
    rows = [f"1\t1\t0\t0\t0\t0\t0\t0\t{page[0]}\t{page[1]}\t-1\t"]
    for block, line, left, top, text in words:
        height = 60 if text.isupper() and len(text) > 3 else 20
        rows.append(f"5\t1\t{block}\t1\t{line}\t1\t{left}\t{top}\t{len(text) * 12}\t{height}\t{conf}\t{text}")
    return TSV_HEADER + "\n".join(rows) + "\n"


MEMO = [
    (1, 1, 100, 100, "TO:"),
    (1, 1, 200, 100, "All"),
    (1, 2, 100, 140, "FROM:"),
    (1, 2, 200, 140, "Director"),
    (1, 3, 100, 180, "SUBJECT:"),
    (1, 3, 230, 180, "budget"),
    *[(2, n, 100 + 60 * k, 300 + 30 * n, "word") for n in range(1, 20) for k in range(10)],
]


def test_words_and_page_size_come_from_the_tsv() -> None:
    page_w, page_h, words = words_from_tsv(tsv_of(MEMO))
    assert (page_w, page_h) == (W, H)
    assert len(words) == len(MEMO)
    assert words[0] == WordBox(left=100, top=100, width=36, height=20, conf=91.0, text="TO:", block=1, par=1, line=1)


def test_parse_tsv_keeps_the_tsv_for_the_layout() -> None:
    tsv = tsv_of(MEMO)
    assert parse_tsv(tsv).tsv == tsv


def test_a_memo_header_block_shows_as_colon_words_near_the_top() -> None:
    _, _, words = words_from_tsv(tsv_of(MEMO))
    memo = text_layout(words, W, H)
    _, _, plain_words = words_from_tsv(tsv_of(MEMO[6:]))
    plain = text_layout(plain_words, W, H)
    assert memo["header_colon_share"] > 0.1
    assert plain["header_colon_share"] == 0.0
    assert memo["colon_share"] == pytest.approx(3 / len(MEMO))


def test_big_type_and_centred_lines_mark_a_cover_page() -> None:
    # A title in big capitals, centred, and a few short centred lines: a report cover.
    lines = [(1, 1, 300, "ANNUAL"), (1, 2, 400, "REPORT"), (2, 1, 900, "1986"), (3, 1, 1000, "Ltd")]
    cover = [(block, line, W // 2 - len(text) * 6, top, text) for block, line, top, text in lines]
    _, _, words = words_from_tsv(tsv_of(cover))
    features = text_layout(words, W, H)
    assert features["centered_share"] == 1.0
    assert features["short_line_share"] == 1.0
    _, _, body = words_from_tsv(tsv_of(MEMO[6:]))
    assert text_layout(body, W, H)["centered_share"] == 0.0
    assert features["height_max_ratio"] > text_layout(body, W, H)["height_max_ratio"]


def test_two_columns_show_as_half_width_lines() -> None:
    columns = [
        (b, n, 60 + 480 * (b - 1) + 60 * k, 100 + 30 * n, "text") for b in (1, 2) for n in range(30) for k in range(6)
    ]
    _, _, words = words_from_tsv(tsv_of(columns))
    assert text_layout(words, W, H)["half_width_share"] == 1.0
    _, _, full = words_from_tsv(tsv_of(MEMO[6:]))
    assert text_layout(full, W, H)["half_width_share"] == 0.0


def test_no_words_gives_zeros_not_an_error() -> None:
    features = text_layout([], W, H)
    assert set(features) == set(FEATURE_NAMES[:23])
    assert all(value == 0.0 for value in features.values())


def page_with(draw_picture: bool = False, rules: int = 0, ink_words: bool = True) -> tuple[Image.Image, str]:
    image = Image.new("L", (W, H), 255)
    draw = ImageDraw.Draw(image)
    words = MEMO[6:]
    if ink_words:
        for _block, _line, left, top, text in words:
            draw.rectangle((left, top + 4, left + len(text) * 12, top + 16), fill=0)
    if draw_picture:
        draw.rectangle((600, 900, 950, 1250), fill=20)
    for n in range(rules):
        draw.rectangle((50, 1000 + 40 * n, 950, 1003 + 40 * n), fill=0)
    return image, tsv_of(words)


def test_ink_inside_the_words_is_not_counted_outside_them() -> None:
    image, tsv = page_with()
    _, _, words = words_from_tsv(tsv)
    features = ink_layout(image, words, W, H)
    assert features["ink"] > 0.01
    assert features["ink_outside_words"] < 0.05
    assert features["picture_share"] == 0.0
    assert features["hrule_rows"] == 0.0


def test_a_picture_and_ruled_lines_are_seen() -> None:
    image, tsv = page_with(draw_picture=True, rules=3)
    _, _, words = words_from_tsv(tsv)
    features = ink_layout(image, words, W, H)
    assert features["ink_outside_words"] > 0.5
    assert features["picture_share"] > 0.05
    assert features["hrule_rows"] > 0.0


def test_features_do_not_depend_on_the_scan_resolution() -> None:
    image, tsv = page_with(draw_picture=True, rules=2)
    at_1x = page_layout(image, tsv)
    words = MEMO[6:]
    doubled = [(b, line, 2 * left, 2 * top, text) for b, line, left, top, text in words]
    # Twice the pixels, twice the word boxes: the same page scanned at twice the resolution.
    tsv_2x = tsv_of(doubled, page=(2 * W, 2 * H)).replace("\t20\t91.0", "\t40\t91.0")
    tsv_2x = "\n".join(row if not row.startswith("5\t") else _double_width(row) for row in tsv_2x.splitlines())
    at_2x = page_layout(image.resize((2 * W, 2 * H)), tsv_2x)
    assert list(at_1x) == list(FEATURE_NAMES)
    for name in FEATURE_NAMES:
        assert at_2x[name] == pytest.approx(at_1x[name], abs=0.03), name


def _double_width(row: str) -> str:
    cols = row.split("\t")
    cols[8] = str(int(cols[8]) * 2)
    return "\t".join(cols)


def test_a_turned_page_is_measured_upright() -> None:
    image, tsv = page_with(draw_picture=True)
    upright = page_layout(image, tsv)
    # The page came in upside down; OCR read it turned 180 degrees: the layout is the upright page's.
    turned = page_layout(image.transpose(Image.Transpose.ROTATE_180), tsv, rotated=180)
    assert turned["ink_outside_words"] == pytest.approx(upright["ink_outside_words"], abs=0.02)
    assert turned["picture_share"] == pytest.approx(upright["picture_share"], abs=0.01)


def test_a_page_read_sideways_is_measured_upright() -> None:
    image, tsv = page_with(draw_picture=True, rules=2)
    upright = page_layout(image, tsv)
    # Fed sideways: OCR turned it 90 degrees counter-clockwise and read it upright, writing its TSV then.
    sideways = image.transpose(Image.Transpose.ROTATE_270)
    turned = page_layout(sideways, tsv, rotated=90)
    assert turned["ink_outside_words"] == pytest.approx(upright["ink_outside_words"], abs=0.02)
    assert turned["hrule_rows"] == pytest.approx(upright["hrule_rows"], abs=0.3)
    assert turned["vrule_cols"] == pytest.approx(upright["vrule_cols"], abs=0.3)
