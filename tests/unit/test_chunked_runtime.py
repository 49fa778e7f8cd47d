"""How the runtime feeds a transformer model: windows of tokens framed by [CLS]/[SEP], probabilities pooled."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from docflow.domain.encoding import ModelConfig, encode_chunks, pool_chunks

pytestmark = pytest.mark.unit

VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": 4 + i for i in range(20)}}


def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def config(**overrides: object) -> ModelConfig:
    values: dict[str, object] = {
        "name": "t",
        "version": "1",
        "family": "transformer",
        "max_length": 6,
        "max_chars": 10_000,
        "max_chunks": 3,
        "cls_token_id": 2,
        "sep_token_id": 3,
    }
    return ModelConfig.model_validate(values | overrides)


def test_a_document_is_cut_into_framed_windows() -> None:
    text = " ".join(f"w{i}" for i in range(10))  # ten tokens, four fit a window of six
    windows = encode_chunks(tokenizer(), text, config())
    assert windows == [[2, 4, 5, 6, 7, 3], [2, 8, 9, 10, 11, 3], [2, 12, 13, 3]]


def test_only_max_chunks_windows_are_read_and_empty_text_is_one_empty_window() -> None:
    text = " ".join(f"w{i % 20}" for i in range(100))
    assert len(encode_chunks(tokenizer(), text, config(max_chunks=2))) == 2
    assert encode_chunks(tokenizer(), "", config()) == [[2, 3]]
    assert encode_chunks(tokenizer(), "W0  w1", config()) == [[2, 4, 5, 3]]  # normalized like training


def test_a_transformer_config_must_name_its_frame_tokens() -> None:
    with pytest.raises(ValueError, match="cls_token_id"):
        config(cls_token_id=None)
    with pytest.raises(ValueError, match="room"):
        config(max_length=2)
    assert ModelConfig(name="t", version="1", max_length=5, max_chars=10).family == "linear"


def test_pooling_is_the_softmax_of_the_mean_logits() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    per_window = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mean = logits.mean(axis=0)
    expected = np.exp(mean) / np.exp(mean).sum()
    assert pool_chunks(per_window.astype(np.float32)) == pytest.approx(expected, abs=1e-6)
    assert pool_chunks(per_window[:1]) == pytest.approx(per_window[0], abs=1e-6)
