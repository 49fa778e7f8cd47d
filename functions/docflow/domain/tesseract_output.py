"""What Tesseract says about a page, as data: the word table (TSV) rebuilt into text with its line breaks and
a mean word confidence (`parse_tsv` -> `OcrPage`), and the orientation report of its OSD mode (`parse_osd`
-> `Orientation`).

Split out of docflow.domain.ocr, which runs Tesseract (its command line or libtesseract in-process) and
re-exports these names: this module only reads text, so it is unit-tested without any engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["OcrPage", "Orientation", "parse_osd", "parse_tsv"]


@dataclass(frozen=True, slots=True)
class OcrPage:
    text: str  # lines separated by "\n", paragraphs/blocks by a blank line
    confidence: float | None  # mean word confidence 0..100 over words with conf >= 0; None: no words
    words: int
    # Tesseract's TSV for the page (word boxes, lines, blocks): what docflow.domain.layout reads the page's
    # layout from. Empty from an engine that has none.
    tsv: str = ""


@dataclass(frozen=True, slots=True)
class Orientation:
    """Which way up a page is, as Tesseract's orientation and script detection (OSD) sees it."""

    degrees: int  # 0, 90, 180 or 270: turn the page this far counter-clockwise to read it upright
    confidence: float  # OSD's orientation confidence (under ~2 is a guess; a clear page of text: 5-15)


TSV_HEADER = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"


_OSD_DEGREES = re.compile(r"^Orientation in degrees:\s*(\d+)", re.MULTILINE)
_OSD_CONFIDENCE = re.compile(r"^Orientation confidence:\s*([0-9.]+)", re.MULTILINE)


def parse_osd(text: str) -> Orientation | None:
    """Orientation from ``tesseract --psm 0`` output ("Orientation in degrees: 270" … "Orientation
    confidence: 11.16"); None when it holds none."""
    degrees, confidence = _OSD_DEGREES.search(text), _OSD_CONFIDENCE.search(text)
    if degrees is None or confidence is None:
        return None
    return Orientation(int(degrees.group(1)) % 360, float(confidence.group(1)))


def parse_tsv(tsv: str) -> OcrPage:
    """Rebuild text and statistics from Tesseract's TSV.

    Columns: level page_num block_num par_num line_num word_num left top width height conf text.
    Words of one line are joined by a space, lines by "\\n", paragraphs and blocks by a blank line
    (the same layout as Tesseract's own text output).
    """
    paragraphs: list[list[list[str]]] = []
    current_par: tuple[int, int, int] | None = None
    current_line: tuple[int, int, int, int] | None = None
    confs: list[float] = []
    words = 0
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t", 11)
        if len(cols) < 12 or cols[0] != "5":
            continue
        word = cols[11].strip()
        if not word:
            continue
        page, block, par, line = (int(c) for c in cols[1:5])
        if (page, block, par) != current_par:
            current_par = (page, block, par)
            paragraphs.append([])
            current_line = None
        if (page, block, par, line) != current_line:
            current_line = (page, block, par, line)
            paragraphs[-1].append([])
        paragraphs[-1][-1].append(word)
        words += 1
        conf = float(cols[10])
        if conf >= 0:
            confs.append(conf)
    text = "\n\n".join("\n".join(" ".join(line) for line in par) for par in paragraphs)
    confidence = sum(confs) / len(confs) if confs else None
    return OcrPage(text=text, confidence=confidence, words=words, tsv=tsv)
