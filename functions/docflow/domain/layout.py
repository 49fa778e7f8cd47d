"""What a page looks like, as a few numbers: the layout signal that OCR text does not carry.

People tell a memo from a letter from a report cover at a glance, by layout; a character n-gram model
reads the page the way a search engine does. These features come from what ExtractText already has:
Tesseract's word boxes (position, size, line and block of every word) and the page image (ink outside
the words: pictures, rules, boxes, handwriting). They travel with the page's text (``PageText.layout``)
to Classify, where a model that was fitted with them (``docflow.domain.layout_head``) reads them.

Every feature is scale-free (fractions of the page, ratios, logs of counts), so the same page scanned at
100 or 300 dpi, upscaled or not, gives about the same numbers. ``LAYOUT_VERSION`` names this definition;
a model records the version it was fitted with and a runtime that computes another refuses to mix them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # Pillow is imported where pages are measured: Classify reads LAYOUT_VERSION on a layer without it
    from PIL import Image

LAYOUT_VERSION = "1"

# Ink features are computed on the page reduced to this height: enough for rules and pictures, ~1 ms.
INK_HEIGHT = 500


@dataclass(frozen=True, slots=True)
class WordBox:
    """One word Tesseract read, in the pixels of the image it read (any scale)."""

    left: int
    top: int
    width: int
    height: int
    conf: float
    text: str
    block: int
    par: int
    line: int


FEATURE_NAMES: tuple[str, ...] = (
    "log_words",
    "mean_conf",
    "word_area",
    "height_median",
    "height_spread",
    "height_max_ratio",
    "big_type_share",
    "log_lines",
    "words_per_line",
    "short_line_share",
    "log_blocks",
    "top_edge",
    "bottom_edge",
    "left_spread",
    "centered_share",
    "half_width_share",
    "top_zone_share",
    "bottom_zone_share",
    "line_gap",
    "digit_share",
    "upper_share",
    "colon_share",
    "header_colon_share",
    "ink",
    "ink_outside_words",
    "picture_share",
    "hrule_rows",
    "vrule_cols",
)


def words_from_tsv(tsv: str) -> tuple[int, int, list[WordBox]]:
    """(page width, page height, words) from Tesseract's TSV (header line first). Words with no text
    are left out; the page size comes from the level-1 row (0, 0 when the TSV has none)."""
    page_w = page_h = 0
    words: list[WordBox] = []
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t", 11)
        if len(cols) < 12:
            continue
        if cols[0] == "1":
            page_w, page_h = int(cols[8]), int(cols[9])
            continue
        if cols[0] != "5":
            continue
        text = cols[11].strip()
        if not text:
            continue
        words.append(
            WordBox(
                left=int(cols[6]),
                top=int(cols[7]),
                width=int(cols[8]),
                height=int(cols[9]),
                conf=float(cols[10]),
                text=text,
                block=int(cols[2]),
                par=int(cols[3]),
                line=int(cols[4]),
            )
        )
    return page_w, page_h, words


def _share(count: float, total: float) -> float:
    return float(count) / total if total else 0.0


def text_layout(words: Sequence[WordBox], page_w: int, page_h: int) -> dict[str, float]:
    """The features that come from the word boxes alone (all of FEATURE_NAMES but the ink ones)."""
    n = len(words)
    out = dict.fromkeys(FEATURE_NAMES[:23], 0.0)
    out["log_words"] = math.log1p(n)
    if n == 0 or page_w <= 0 or page_h <= 0:
        return out
    confs = [w.conf for w in words if w.conf >= 0]
    out["mean_conf"] = (sum(confs) / len(confs) / 100.0) if confs else 0.0
    heights = np.array([w.height for w in words], dtype=np.float64) / page_h
    median = float(np.median(heights)) or 1e-6
    q75, q25 = np.percentile(heights, [75, 25])
    out["word_area"] = float(sum(w.width * w.height for w in words)) / (page_w * page_h)
    out["height_median"] = median * 100.0  # % of the page height
    out["height_spread"] = float(q75 - q25) / median
    out["height_max_ratio"] = math.log(float(heights.max()) / median)
    out["big_type_share"] = _share(int((heights > 2.0 * median).sum()), n)

    lines: dict[tuple[int, int, int], list[WordBox]] = {}
    for w in words:
        lines.setdefault((w.block, w.par, w.line), []).append(w)
    spans = []  # (left, right, top, bottom, word count) per line, as page fractions
    for members in lines.values():
        left = min(w.left for w in members) / page_w
        right = max(w.left + w.width for w in members) / page_w
        top = min(w.top for w in members) / page_h
        bottom = max(w.top + w.height for w in members) / page_h
        spans.append((left, right, top, bottom, len(members)))
    spans.sort(key=lambda s: s[2])
    n_lines = len(spans)
    out["log_lines"] = math.log1p(n_lines)
    out["words_per_line"] = n / n_lines
    out["short_line_share"] = _share(sum(1 for s in spans if s[4] <= 3), n_lines)
    out["log_blocks"] = math.log1p(len({w.block for w in words}))
    out["top_edge"] = spans[0][2]
    out["bottom_edge"] = max(s[3] for s in spans)
    lefts = np.array([s[0] for s in spans])
    out["left_spread"] = float(lefts.std())
    centered = [s for s in spans if (s[1] - s[0]) < 0.6 and abs((s[0] + s[1]) / 2 - 0.5) < 0.06 and s[0] > 0.15]
    out["centered_share"] = _share(len(centered), n_lines)
    out["half_width_share"] = _share(sum(1 for s in spans if s[1] < 0.55 or s[0] > 0.45), n_lines)
    tops = np.array([w.top / page_h for w in words])
    out["top_zone_share"] = _share(int((tops < 0.2).sum()), n)
    out["bottom_zone_share"] = _share(int((tops > 0.8).sum()), n)
    if n_lines > 1:
        gaps = [b[2] - a[3] for a, b in pairwise(spans)]
        line_heights = [s[3] - s[2] for s in spans]
        out["line_gap"] = min(5.0, max(0.0, float(np.median(gaps)) / (float(np.median(line_heights)) or 1e-6)))
    chars = "".join(w.text for w in words)
    letters = [c for c in chars if c.isalpha()]
    out["digit_share"] = _share(sum(c.isdigit() for c in chars), len(chars))
    out["upper_share"] = _share(sum(c.isupper() for c in letters), len(letters))
    colons = [w for w in words if w.text.endswith(":")]
    out["colon_share"] = _share(len(colons), n)
    out["header_colon_share"] = _share(sum(1 for w in colons if w.top / page_h < 0.4), max(1, n_lines))
    return out


def ink_layout(image: Image.Image, words: Iterable[WordBox], page_w: int, page_h: int) -> dict[str, float]:
    """The ink features: how dark the page is, how much of its ink lies outside the words Tesseract read
    (pictures, logos, handwriting, rules, boxes), and how many long horizontal and vertical rules it has."""
    from PIL import Image

    gray = image.convert("L") if image.mode != "L" else image
    scale = INK_HEIGHT / gray.height if gray.height else 1.0
    if scale < 1.0:
        gray = gray.resize((max(1, round(gray.width * scale)), INK_HEIGHT), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.uint8)
    height, width = pixels.shape
    ink = pixels < 128
    total = float(ink.sum())
    out = {"ink": total / ink.size if ink.size else 0.0}
    outside = ink.copy()
    if page_w > 0 and page_h > 0:
        sx, sy = width / page_w, height / page_h
        for w in words:
            x0, y0 = int(w.left * sx), int(w.top * sy)
            x1, y1 = math.ceil((w.left + w.width) * sx) + 1, math.ceil((w.top + w.height) * sy) + 1
            outside[max(0, y0 - 1) : y1, max(0, x0 - 1) : x1] = False
    out["ink_outside_words"] = _share(float(outside.sum()), total)
    # A picture is a region dense with ink that is not words: 16x16-pixel cells over 30 % ink, outside words.
    cell = 16
    rows, cols = height // cell, width // cell
    if rows and cols:
        cells = outside[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell).mean(axis=(1, 3))
        out["picture_share"] = float((cells > 0.3).mean())
    else:
        out["picture_share"] = 0.0
    out["hrule_rows"] = math.log1p(_long_runs(ink, width * 0.4))
    out["vrule_cols"] = math.log1p(_long_runs(ink.T, height * 0.25))
    return out


def _long_runs(mask: np.ndarray, min_length: float) -> int:
    """How many rows of ``mask`` hold a run of True at least ``min_length`` long (rules, box edges)."""
    count = 0
    for row in mask:
        if row.sum() < min_length:
            continue
        padded = np.concatenate(([0], row.astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(padded))
        if len(edges) and (edges[1::2] - edges[0::2]).max() >= min_length:
            count += 1
    return count


def page_layout(image: Image.Image, tsv: str, rotated: int = 0) -> dict[str, float]:
    """All of FEATURE_NAMES for one page: the image given to OCR, the TSV Tesseract wrote for it after the
    page was turned ``rotated`` degrees counter-clockwise (``recognize_upright``)."""
    from PIL import Image

    turns = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    page_w, page_h, words = words_from_tsv(tsv)
    # Reduced before turning: the ink features need ~INK_HEIGHT pixels, not the 2x-upscaled page.
    factor = max(1, max(image.size) // (2 * INK_HEIGHT))
    small = image.reduce(factor) if factor > 1 else image
    if rotated in turns:
        small = small.transpose(turns[rotated])
    if not page_w:  # no page row: the words are in the pixels of the image as given
        page_w, page_h = image.size if rotated in (0, 180) else (image.height, image.width)
    features = text_layout(words, page_w, page_h)
    features.update(ink_layout(small, words, page_w, page_h))
    return {name: round(float(features[name]), 6) for name in FEATURE_NAMES}
