"""A model's graph contract and how text becomes its inputs, the same in training and at serving time.

A model directory's graph (model.onnx) takes ``input_ids`` and ``attention_mask`` (int64 [batch, seq]) and
gives ``probabilities`` (float32 [batch, n_classes], rows sum to 1); its config.json is ``ModelConfig``. The
contract is the same for the TF-IDF model trained today and for a transformer, so the runtime
(docflow.domain.classifier) does not know which it serves. Text goes through ``normalize_text`` (shared with
training), is cut to ``max_chars`` characters, tokenized without special tokens, and cut to ``max_length``
tokens. A bag-of-tokens model needs no truncation to be correct; the caps only bound memory and time on huge
inputs (a 500-page PDF is classified by its first ``max_chars`` characters) and are applied identically when
training. A transformer reads a document as windows of tokens whose probabilities are pooled.

Pure: pydantic, numpy and a ``tokenizers`` Tokenizer, no onnxruntime session. Training encodes its documents and
names its graph's inputs and outputs with these (docflow_training.train, .transformer, .export).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tokenizers import Tokenizer

from docflow.domain.text import NORMALIZER_VERSION, char_ngrams, normalize_text

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
PROBABILITIES = "probabilities"


class ModelConfig(BaseModel):
    """config.json. Unknown keys (training details) are kept, not rejected."""

    model_config = ConfigDict(frozen=True, extra="allow", protected_namespaces=())

    name: str
    version: str
    max_length: int = Field(gt=0)  # tokens kept per document
    max_chars: int = Field(gt=0)  # characters of raw text kept per document, before tokenizing
    pad_token_id: int = Field(default=0, ge=0)
    normalizer_version: str = NORMALIZER_VERSION
    # Set for character n-gram models: the tokenizer maps [n_min, n_max] character n-grams of each
    # word (``char_ngrams``) to ids instead of splitting words itself.
    char_ngram_range: tuple[int, int] | None = None
    created_at: datetime | None = None
    # Calibrated when the model was trained: the lowest confidence at which the predictions kept out of
    # review reach the target precision on the held-out split, as is and OCR-noised (metrics.json's
    # review_threshold holds both calibrations).
    review_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # "linear": a bag of tokens, one graph row per document. "transformer": a sequence model whose graph
    # reads windows of max_length tokens ([CLS] … [SEP]); a document is cut into up to max_chunks windows,
    # each a graph row, and its probabilities are pooled (``pool_chunks``).
    family: Literal["linear", "transformer"] = "linear"
    max_chunks: int = Field(default=1, ge=1)
    # Set for a combined model: the weight w of the partner model's (partner_*.json/onnx) log-probabilities; the
    # served ones are p ∝ exp((1-w)·log p_this + w·log p_partner), normalized (``pool_partner``).
    partner_weight: float | None = Field(default=None, gt=0.0, lt=1.0)
    cls_token_id: int | None = None
    sep_token_id: int | None = None

    @model_validator(mode="after")
    def _transformer_tokens(self) -> ModelConfig:
        if self.family == "transformer" and (self.cls_token_id is None or self.sep_token_id is None):
            raise ValueError("a transformer model's config names its cls_token_id and sep_token_id")
        if self.family == "transformer" and self.max_length < 3:
            raise ValueError("a transformer model's max_length must leave room for [CLS] and [SEP]")
        return self


def encode_texts(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_length: int,
    max_chars: int,
    char_ngram_range: tuple[int, int] | None = None,
) -> list[list[int]]:
    """Token ids per text, exactly as the model saw them in training: cut to ``max_chars``,
    normalized, tokenized without special tokens, cut to ``max_length``. With ``char_ngram_range``
    the tokenizer is given the text's character n-grams as pre-tokenized input."""
    normalized = [normalize_text(text[:max_chars]) for text in texts]
    if char_ngram_range is not None:
        grams = [char_ngrams(text, *char_ngram_range) for text in normalized]
        encodings = tokenizer.encode_batch(grams, is_pretokenized=True, add_special_tokens=False)
    else:
        encodings = tokenizer.encode_batch(normalized, add_special_tokens=False)
    return [encoding.ids[:max_length] for encoding in encodings]


def encode_chunks(tokenizer: Tokenizer, text: str, config: ModelConfig) -> list[list[int]]:
    """A transformer model's graph rows for one document, exactly as it was trained on them: the text cut to
    ``max_chars`` and normalized, tokenized without special tokens, cut into windows of ``max_length - 2``
    tokens (at most ``max_chunks``: the rest of a long document is not read), each window framed by [CLS] and
    [SEP]. An empty document is one empty window."""
    assert config.cls_token_id is not None and config.sep_token_id is not None
    ids = tokenizer.encode(normalize_text(text[: config.max_chars]), add_special_tokens=False).ids
    body = config.max_length - 2
    windows = [ids[start : start + body] for start in range(0, len(ids), body)][: config.max_chunks] or [[]]
    return [[config.cls_token_id, *window, config.sep_token_id] for window in windows]


def pool_chunks(probabilities: np.ndarray) -> np.ndarray:
    """One document's probabilities from its windows' ([chunks, n_classes]): the softmax of the mean log
    probability, which is the softmax of the mean logits (each window's log-softmax differs from its logits
    by a constant). Training pools the same way."""
    mean_log = np.log(np.clip(probabilities.astype(np.float64), 1e-12, 1.0)).mean(axis=0)
    exp = np.exp(mean_log - mean_log.max())
    return (exp / exp.sum()).astype(np.float32)


def pool_partner(primary: np.ndarray, partner: np.ndarray, weight: float) -> np.ndarray:
    """A combined model's probabilities ([docs, n_classes]) from its two graphs': the normalized weighted
    geometric mean, softmax((1-w)·log p_primary + w·log p_partner)."""
    log = (1.0 - weight) * np.log(np.clip(primary.astype(np.float64), 1e-9, 1.0)) + weight * np.log(
        np.clip(partner.astype(np.float64), 1e-9, 1.0)
    )
    exp = np.exp(log - log.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def pad_batch(id_lists: Sequence[Sequence[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64 [batch, longest]. At least one column wide, so an empty
    document is a row of padding with a zero mask rather than a zero-width tensor."""
    width = max(1, *(len(ids) for ids in id_lists)) if id_lists else 1
    input_ids = np.full((len(id_lists), width), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(id_lists), width), dtype=np.int64)
    for row, ids in enumerate(id_lists):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask
