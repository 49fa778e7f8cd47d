"""An OCR-noise channel: corpus text degraded the way Tesseract degrades ~100-dpi scans.

Used two ways: to *evaluate* (the held-out split pushed through the channel is the best text-only
proxy for production input, whose OCR engine and scan quality differ from the corpus's), and to
*augment* training (noised copies of training documents teach the model OCR-robust features).

The channel is deterministic for a seed. Per character, in this order of checks: a look-alike
substitution (the classic OCR confusions: l/1/I, O/0, rn/m, e/c, …), a dropped character, a
merged word (the space after a word dropped), a split word (a space inserted), a case flip; and per
line, now and then, a burst of junk punctuation (rules and smudges read as text).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Look-alikes, both directions where OCR makes both mistakes.
_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "l": ("1", "I", "|", "i"),
    "1": ("l", "I", "i"),
    "I": ("l", "1", "|"),
    "i": ("l", "1", "j", "í"),
    "o": ("0", "a", "c", "e"),
    "O": ("0", "Q", "D"),
    "0": ("O", "o"),
    "e": ("c", "o", "é", "a"),
    "c": ("e", "o", "("),
    "a": ("o", "e", "s"),
    "m": ("rn", "nn", "in"),
    "n": ("ri", "u", "h"),
    "u": ("n", "v", "ii"),
    "h": ("b", "li", "n"),
    "r": ("n", "t", "f"),
    "t": ("f", "l", "r"),
    "f": ("t", "r"),
    "s": ("5", "S", "a"),
    "S": ("5", "s", "$"),
    "5": ("S", "s"),
    "g": ("q", "9", "y"),
    "B": ("8", "E", "R"),
    "8": ("B", "3"),
    "d": ("cl", "a"),
    "w": ("vv", "v"),
    "y": ("v", "g"),
    "v": ("y", "u"),
    "k": ("lc", "x"),
    ".": (",", "'", ""),
    ",": (".", ";"),
}
_JUNK = "|_-\u2014'\u2018\u2019\u201c\u201d.,:;~^*\u00b0"  # rules, smudges, curly quotes


@dataclass(frozen=True)
class NoiseLevel:
    substitute: float = 0.04  # per character: OCR look-alike
    drop: float = 0.01  # per character: character lost
    merge: float = 0.03  # per space: two words run together
    split: float = 0.01  # per character inside a word: a space inserted
    case: float = 0.01  # per letter: case flipped
    junk_line: float = 0.08  # per line: a burst of junk punctuation appended
    drop_line: float = 0.0  # per line: the whole line lost (a region OCR did not find)


LIGHT = NoiseLevel(0.02, 0.005, 0.015, 0.005, 0.005, 0.04)
MEDIUM = NoiseLevel()
# Tesseract on ~100-dpi scans (FUNSD, bench/ocr_cer.py): CER ~0.37, bag-of-words F1 ~0.65 — many
# words are not garbled but missing (regions not found), hence the line drops.
HEAVY = NoiseLevel(0.08, 0.02, 0.06, 0.02, 0.02, 0.15, 0.25)


def ocr_noise(text: str, level: NoiseLevel, seed: int | str) -> str:
    """``text`` through the channel; the same (text, level, seed) always gives the same output."""
    rng = random.Random(seed)
    rand = rng.random
    if level.drop_line:
        lines = text.split("\n")
        kept = [line for line in lines if rand() >= level.drop_line]
        text = "\n".join(kept if kept or not lines else lines[:1])
    out: list[str] = []
    prev_alnum = False
    for ch in text:
        if ch == "\n":
            if rand() < level.junk_line:
                out.append(" " + "".join(rng.choice(_JUNK) for _ in range(rng.randint(1, 4))))
            out.append(ch)
            prev_alnum = False
            continue
        if ch == " ":
            if prev_alnum and rand() < level.merge:
                prev_alnum = False
                continue
            out.append(ch)
            prev_alnum = False
            continue
        r = rand()
        if r < level.drop:
            continue
        if r < level.drop + level.substitute and ch in _CONFUSIONS:
            out.append(rng.choice(_CONFUSIONS[ch]))
        elif ch.isalpha() and rand() < level.case:
            out.append(ch.swapcase())
        else:
            out.append(ch)
        if prev_alnum and ch.isalnum() and rand() < level.split:
            out.insert(len(out) - 1, " ")
        prev_alnum = ch.isalnum()
    return "".join(out)
