"""The one text normalizer, applied identically before training and before inference.

Training imports this module from the runtime package, so a model can never be fed text that was
cleaned differently from the text it learned from. Keep it cheap, deterministic and idempotent
(``normalize_text(normalize_text(t)) == normalize_text(t)``): changing it changes every model's
input, so bump ``NORMALIZER_VERSION`` when you do (it is recorded in each model's config.json).
"""

from __future__ import annotations

import re
import unicodedata

NORMALIZER_VERSION = "1"

# C0/C1 control characters that OCR and PDF text layers leave behind separate words: make them spaces.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Zero-width and bidi format characters, BOMs: invisible inside words, so drop them.
_FORMAT = re.compile(r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")
_WHITESPACE = re.compile(r"\s+")
# OCR of rules, borders and smudges yields long runs of the same punctuation ("-------", "......").
_REPEATED_PUNCT = re.compile(r"([^\w\s])\1{2,}")


def normalize_text(text: str) -> str:
    """NFKC (folds ligatures, full-width and compatibility forms), lowercase, control characters to
    spaces, invisible format characters dropped, a run of one repeated punctuation mark shortened
    to one, whitespace collapsed to single spaces and stripped. Line structure is not kept: the
    models here are bags of tokens."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _FORMAT.sub("", _CONTROL.sub(" ", text))
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return _WHITESPACE.sub(" ", text).strip()


def char_ngrams(normalized: str, n_min: int, n_max: int) -> list[str]:
    """Character n-grams of each word of already-normalized text, the word padded with one space each
    side (so prefixes and suffixes are their own features): "memo" → " m", "me", …, "mo ", " me", ….

    OCR garbles characters, not whole words: "rnemorandum" still shares most of its n-grams with
    "memorandum", where a word model sees an unknown token. Training and runtime both call this (the
    tokenizer maps each n-gram to an id), so it is part of the model's input contract.
    """
    grams: list[str] = []
    for word in normalized.split():
        padded = f" {word} "
        length = len(padded)
        for n in range(n_min, n_max + 1):
            if n > length:
                break
            grams.extend(padded[i : i + n] for i in range(length - n + 1))
    return grams
