"""Featurization at training time: the tokenizer, token counts and the TF-IDF weighting.

Token ids come from the runtime's ``encode_texts`` (same normalizer, same caps), and the weighting
here is what the exported ONNX graph recomputes from ``input_ids``/``attention_mask``:

    counts[t] = occurrences of token t          (padding masked out; the pad token's idf is 0)
    tf        = log1p(counts)                   (sublinear: the 10th "tobacco" adds little)
    x         = tf * idf,  idf[t] = ln((1 + n) / (1 + df[t])) + 1   (sklearn's smooth idf)
    x         = x / max(||x||_2, 1e-12)         (an empty document stays the zero vector)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from docflow.domain.text import char_ngrams

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
NORM_EPSILON = 1e-12


def train_tokenizer(normalized_texts: Sequence[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    """A BPE tokenizer learned from already-normalized training texts only.

    BPE rather than WordPiece because the WordPiece trainer is not deterministic: it numbers its
    "##" continuation tokens in hash-map order, which changes tie-breaks between merges from run to
    run (huggingface/tokenizers#1794, open). Plain BPE on BERT-style pre-tokens has no continuation
    prefix and gives byte-identical files for the same input; a test guards that. Held-out accuracy
    of the two on Tobacco-3482 is the same within noise.

    ``[PAD]`` is id 0 and ``[UNK]`` id 1. Its own normalizer (NFKC + lowercase) is a no-op on text
    that went through ``normalize_text`` and only makes the file safer to use on its own. No
    post-processor: a bag of tokens has no use for [CLS]/[SEP].
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, UNK_TOKEN],
        show_progress=False,
    )
    tokenizer.train_from_iterator(normalized_texts, trainer=trainer, length=len(normalized_texts))
    if tokenizer.token_to_id(PAD_TOKEN) != 0:
        raise RuntimeError("the BPE trainer did not put [PAD] at id 0")
    return tokenizer


def train_char_ngram_tokenizer(
    normalized_texts: Sequence[str],
    ngram_range: tuple[int, int],
    vocab_size: int,
    min_df: int,
) -> Tokenizer:
    """A WordLevel tokenizer whose vocabulary is the training texts' character n-grams
    (``char_ngrams``) seen in at least ``min_df`` documents, the ``vocab_size - 2`` most frequent by
    document frequency (ties by the n-gram, so the file is the same for the same input).

    ``[PAD]`` is id 0, ``[UNK]`` id 1 (an n-gram unseen in training: its idf is set to 0). No
    pre-tokenizer: the runtime hands it the n-grams pre-tokenized (they contain spaces)."""
    document_frequency: Counter[str] = Counter()
    for text in normalized_texts:
        document_frequency.update(set(char_ngrams(text, *ngram_range)))
    kept = sorted(
        (g for g, df in document_frequency.items() if df >= min_df), key=lambda g: (-document_frequency[g], g)
    )
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1}
    for gram in kept[: max(0, vocab_size - 2)]:
        vocab[gram] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    return tokenizer


def count_matrix(id_lists: Sequence[Sequence[int]], vocab_size: int) -> sp.csr_matrix:
    """float64 [n_docs, vocab_size] token counts."""
    lengths = np.fromiter((len(ids) for ids in id_lists), dtype=np.int64, count=len(id_lists))
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    indices = (
        np.concatenate([np.asarray(ids, dtype=np.int64) for ids in id_lists])
        if indptr[-1]
        else np.zeros(0, dtype=np.int64)
    )
    counts = sp.csr_matrix(
        (np.ones(len(indices)), indices, indptr), shape=(len(id_lists), vocab_size), dtype=np.float64
    )
    counts.sum_duplicates()
    return counts


def fit_idf(counts: sp.csr_matrix, pad_token_id: int, unk_token_id: int | None = None) -> np.ndarray:
    """Smooth idf from the training split's document frequencies; 0 for the pad token (and for the
    unknown token when given: out-of-vocabulary n-grams carry no signal)."""
    n_docs = counts.shape[0]
    document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log((1.0 + n_docs) / (1.0 + document_frequency)) + 1.0
    idf[pad_token_id] = 0.0
    if unk_token_id is not None:
        idf[unk_token_id] = 0.0
    return idf


def tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """log1p(counts) * idf, rows L2-normalized (zero rows stay zero)."""
    weighted = counts.copy()
    weighted.data = np.log1p(weighted.data)
    weighted = weighted.multiply(idf[np.newaxis, :]).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    return (sp.diags(1.0 / np.maximum(norms, NORM_EPSILON)) @ weighted).tocsr()
