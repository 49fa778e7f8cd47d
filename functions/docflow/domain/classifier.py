"""Classifier runtime: a model directory served with onnxruntime + tokenizers + numpy only.

A model directory holds
    model.onnx      inputs ``input_ids`` and ``attention_mask`` (int64 [batch, seq]),
                    output ``probabilities`` (float32 [batch, n_classes], rows sum to 1)
    tokenizer.json  a HuggingFace ``tokenizers`` tokenizer
    labels.json     the class names, in the order of the output columns
    config.json     name, version, max_length, max_chars, pad_token_id, normalizer_version, …
    metrics.json    the held-out evaluation (read if present; not needed to predict)
    baseline.json   the drift baseline (docflow.domain.drift; optional)
    scan_head.json  the scan head fitted on real labelled scans (docflow.domain.scan_head; optional)
    partner_*       a combined model's second graph, tokenizer and config (config.json's partner_weight)

Here: the directory loaded and checked (``TextClassifier``, once per process and files:
``load_classifier``), its graph run on a document's text, and the review rule applied to what it predicts. How
text becomes the graph's inputs (config.json, token ids, padding, a transformer's windows), which training
shares, is docflow.domain.encoding's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from docflow.domain.encoding import (
    ATTENTION_MASK,
    INPUT_IDS,
    PROBABILITIES,
    ModelConfig,
    encode_chunks,
    encode_texts,
    pad_batch,
    pool_chunks,
    pool_partner,
)
from docflow.domain.model_files import (
    CONFIG_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_FILES,
    PARTNER_CONFIG_FILE,
    PARTNER_FILES,
    PARTNER_MODEL_FILE,
    PARTNER_TOKENIZER_FILE,
    REQUIRED_FILES,
    SERVED_FILES,
    TOKENIZER_FILE,
)
from docflow.domain.scan_head import ScanHead, load_scan_head
from docflow.domain.text import NORMALIZER_VERSION
from docflow.values import Prediction, ReviewCode

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_FILE",
    "LABELS_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "MODEL_FILES",
    "REQUIRED_FILES",
    "TOKENIZER_FILE",
    "TextClassifier",
    "load_classifier",
]

# Below this confidence a prediction goes to review when neither DOCFLOW_REVIEW_THRESHOLD nor the model
# (config.json's calibrated ``review_threshold``) names a threshold.
DEFAULT_REVIEW_THRESHOLD = 0.5


class ModelNotFoundError(FileNotFoundError):
    """The model directory, or one of the files the runtime needs, is missing."""


class ModelIncompatibleError(ValueError):
    """The model directory exists but cannot be served by this runtime as is."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelIncompatibleError(f"cannot read {path}: {exc}") from exc


class _Graph:
    """One ONNX graph with its tokenizer and config: text in, probabilities over ``n_labels`` classes out."""

    def __init__(self, model_dir: Path, names: tuple[str, str, str], n_labels: int) -> None:
        model_file, tokenizer_file, config_file = names
        self.config = ModelConfig.model_validate(_read_json(model_dir / config_file))
        if self.config.normalizer_version != NORMALIZER_VERSION:
            raise ModelIncompatibleError(
                f"{model_dir} was trained with text normalizer v{self.config.normalizer_version}, "
                f"this runtime normalizes with v{NORMALIZER_VERSION}: retrain the model (`make model`)."
            )
        self.tokenizer = Tokenizer.from_file(str(model_dir / tokenizer_file))
        # No padding/truncation configured in the file may change what encode_texts produces.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = model_dir / model_file
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if inputs != {INPUT_IDS, ATTENTION_MASK} or PROBABILITIES not in outputs:
            raise ModelIncompatibleError(
                f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                f"expected inputs {INPUT_IDS}, {ATTENTION_MASK} and output {PROBABILITIES}"
            )
        n_out = outputs[PROBABILITIES].shape[-1]
        if isinstance(n_out, int) and n_out != n_labels:
            raise ModelIncompatibleError(f"{path} outputs {n_out} classes but labels.json names {n_labels}")
        self.n_labels = n_labels

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The graph inputs for ``texts``: (input_ids, attention_mask)."""
        ids = encode_texts(
            self.tokenizer, texts, self.config.max_length, self.config.max_chars, self.config.char_ngram_range
        )
        return pad_batch(ids, self.config.pad_token_id)

    def predict_proba(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        if self.config.family == "transformer":
            return self._predict_proba_chunked(texts)
        chunks = []
        for start in range(0, len(texts), batch_size):
            input_ids, attention_mask = self.encode(texts[start : start + batch_size])
            (probabilities,) = self.session.run([PROBABILITIES], {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
            chunks.append(probabilities)
        if not chunks:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _predict_proba_chunked(self, texts: Sequence[str]) -> np.ndarray:
        """A transformer model's probabilities: each document's windows in one graph run, then pooled."""
        rows = []
        for text in texts:
            input_ids, attention_mask = pad_batch(
                encode_chunks(self.tokenizer, text, self.config), self.config.pad_token_id
            )
            (probabilities,) = self.session.run([PROBABILITIES], {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
            rows.append(pool_chunks(probabilities))
        if not rows:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        return np.stack(rows)


class TextClassifier:
    """One loaded model. Thread-safe: ``predict`` may be called from several threads at once.

    The ONNX session runs single-threaded (intra- and inter-op 1): parallelism is across documents
    (Lambda instances, or the embedded runner's workers), and a second thread pool per session
    would only contend with them. A combined model (config.json's ``partner_weight``) runs its two graphs
    and pools their probabilities (``pool_partner``).
    """

    def __init__(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
        if missing:
            where = "does not exist" if not model_dir.is_dir() else f"lacks {', '.join(missing)}"
            raise ModelNotFoundError(
                f"No classifier model at {model_dir}: the directory {where}. "
                "Build the default model with `make model`, or train one with "
                f"`python -m docflow_training --data <corpus dir> --out {model_dir}`."
            )
        self.model_dir = model_dir
        labels = _read_json(model_dir / LABELS_FILE)
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise ModelIncompatibleError(f"{model_dir / LABELS_FILE} must be a non-empty list of class names")
        self.labels: tuple[str, ...] = tuple(labels)
        self.graph = _Graph(model_dir, (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE), len(self.labels))
        self.config = self.graph.config
        self.tokenizer = self.graph.tokenizer
        self.session = self.graph.session
        self.partner: _Graph | None = None
        if self.config.partner_weight is not None:
            missing = [name for name in PARTNER_FILES if not (model_dir / name).is_file()]
            if missing:
                raise ModelNotFoundError(
                    f"{model_dir} is a combined model (config.json's partner_weight) but lacks {', '.join(missing)}"
                )
            names = (PARTNER_MODEL_FILE, PARTNER_TOKENIZER_FILE, PARTNER_CONFIG_FILE)
            self.partner = _Graph(model_dir, names, len(self.labels))
        try:
            self.scan_head: ScanHead | None = load_scan_head(model_dir, self.labels)
        except ValueError as exc:
            raise ModelIncompatibleError(str(exc)) from exc

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def metrics(self) -> dict[str, Any] | None:
        path = self.model_dir / METRICS_FILE
        return _read_json(path) if path.is_file() else None

    def review_threshold(self, override: float | None = None, prediction: Prediction | None = None) -> float:
        """The confidence below which a prediction goes to review: ``override`` (DOCFLOW_REVIEW_THRESHOLD)
        when set; else, for a prediction the scan head made, the head's (calibrated on real scans); else the
        threshold calibrated for this model at training, else DEFAULT_REVIEW_THRESHOLD."""
        if override is not None:
            return override
        if prediction is not None and prediction.out_of_scope is not None and self.scan_head is not None:
            return self.scan_head.review_threshold
        if self.config.review_threshold is not None:
            return self.config.review_threshold
        return DEFAULT_REVIEW_THRESHOLD

    def review(
        self, prediction: Prediction, override: float | None = None, *, has_text: bool = True
    ) -> tuple[ReviewCode, str] | None:
        """Why ``prediction`` needs a person (a code and a sentence), or None when it can be trusted: no text,
        a page the scan head calls out of scope, or a confidence under the review threshold."""
        if not has_text:
            return ReviewCode.NO_TEXT, "no text could be extracted from the document"
        closest = f"{prediction.predicted_class!r} {prediction.scores.get(prediction.predicted_class, 0.0):.2f}"
        head = self.scan_head
        out_of_scope = prediction.out_of_scope
        if head is not None and out_of_scope is not None and out_of_scope >= head.spec.out_of_scope_threshold:
            return ReviewCode.OUT_OF_SCOPE, (
                f"the page looks like none of the classes the model knows (out-of-scope probability "
                f"{out_of_scope:.2f}; closest class {closest})"
            )
        if head is not None and out_of_scope is not None and prediction.predicted_class in head.spec.uncalibrated:
            return ReviewCode.LOW_CONFIDENCE, (
                f"the page reads as {prediction.predicted_class!r}, a class no real scan calibrated the model's "
                "scan head on: a person decides"
            )
        threshold = self.review_threshold(override, prediction)
        if prediction.confidence < threshold:
            return ReviewCode.LOW_CONFIDENCE, (
                f"confidence {prediction.confidence:.2f} in {prediction.predicted_class!r} "
                f"is below the review threshold {threshold:.2f}"
            )
        return None

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The (first) graph's inputs for ``texts``: (input_ids, attention_mask)."""
        return self.graph.encode(texts)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """float32 [len(texts), n_classes], columns in ``labels`` order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        probabilities = self.graph.predict_proba(texts, batch_size)
        if self.partner is None or self.config.partner_weight is None:
            return probabilities
        return pool_partner(probabilities, self.partner.predict_proba(texts, batch_size), self.config.partner_weight)

    def predict(self, text: str, layout: tuple[dict[str, float], str] | None = None) -> Prediction:
        """The class of one document. With ``layout`` (its first page's features and their definition's
        version, ``ExtractionResult.first_layout``) and a scan head fitted on that definition, the head decides
        (``docflow.domain.scan_head``); otherwise the text model alone."""
        prediction = self.predict_batch([text])[0]
        head = self.scan_head
        if head is None or layout is None:
            return prediction
        features, version = layout
        if version != head.layout_version:
            return prediction  # text extracted under another layout definition: the text model alone
        started = time.perf_counter()
        text_scores = np.array([prediction.scores[label] for label in self.labels])
        scores, out_of_scope = head.apply(text_scores, features)
        best = int(np.argmax(scores))
        return prediction.model_copy(
            update={
                "predicted_class": head.classes[best],
                "confidence": float(scores[best]) * (1.0 - out_of_scope),
                "scores": {label: float(p) for label, p in zip(head.classes, scores, strict=True)},
                "out_of_scope": out_of_scope,
                "seconds": prediction.seconds + time.perf_counter() - started,
            }
        )

    def predict_batch(self, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
        """One Prediction per text; each one's ``seconds`` is its share of the batch's wall time."""
        started = time.perf_counter()
        probabilities = self.predict_proba(texts, batch_size=batch_size)
        seconds = (time.perf_counter() - started) / max(1, len(texts))
        predictions = []
        for row in probabilities:
            best = int(np.argmax(row))
            predictions.append(
                Prediction(
                    predicted_class=self.labels[best],
                    confidence=float(row[best]),
                    scores={label: float(p) for label, p in zip(self.labels, row, strict=True)},
                    model_name=self.config.name,
                    model_version=self.config.version,
                    seconds=seconds,
                )
            )
        return predictions


# (inode, size, mtime in ns) of each file the runtime reads; a missing file is (0, -1, 0).
ModelFingerprint = tuple[tuple[int, int, int], ...]


def model_fingerprint(model_dir: Path) -> ModelFingerprint:
    """What identifies the files in ``model_dir`` now, from one ``stat`` call per served file (microseconds).

    Model directories are replaced as a whole, never edited in place: publishing a version again, a
    re-download of a champion whose files changed, ``make model``. A replaced directory has new files,
    hence new inodes and mtimes, so its fingerprint differs even though its path does not."""
    stats = []
    for name in SERVED_FILES:
        try:
            st = (model_dir / name).stat()
        except OSError:
            stats.append((0, -1, 0))  # TextClassifier names the missing file
        else:
            stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stats)


@lru_cache(maxsize=4)
def _load_classifier(model_dir: Path, fingerprint: ModelFingerprint) -> TextClassifier:
    started = time.perf_counter()
    classifier = TextClassifier(model_dir)
    logger.info(
        "loaded classifier %s %s from %s in %.3fs",
        classifier.name,
        classifier.version,
        model_dir,
        time.perf_counter() - started,
    )
    return classifier


def load_classifier(model_dir: Path, fingerprint: ModelFingerprint | None = None) -> TextClassifier:
    """The classifier for ``model_dir``, loaded once per process (a Lambda's cold start) and again only
    when the directory's files are replaced (``model_fingerprint``, taken here unless the caller has it):
    a warm process serving a path whose model was republished under the same version serves the new files,
    not the ones it loaded first."""
    model_dir = Path(model_dir)
    return _load_classifier(model_dir, fingerprint or model_fingerprint(model_dir))


def clear_classifier_cache() -> None:
    _load_classifier.cache_clear()


def classifier_cache_info() -> Any:
    """functools' CacheInfo of the loaded classifiers (hits, misses, currsize)."""
    return _load_classifier.cache_info()
