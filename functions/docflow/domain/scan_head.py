"""The scan head: the part of a model fitted on real labelled scans, served with numpy alone.

The text model is trained on a corpus of OCR text; real scans differ from it in what their classes mean
(RVL's scientific_report is mostly report cover pages, its resumes include narrative biographies) and
include pages of no class the model knows (budgets, invoices, file folders). A head fitted on real scans
(``docflow_training.scan_head``) corrects the first and tells the second, from two inputs: the text
model's probabilities and the page's layout features (``docflow.domain.layout``).

- Class scores: ``softmax(text_scale * log p_text + bias + z @ weights)`` over the model's classes, ``z`` the
  standardized layout features. A class no real scan was labelled with (the default model's ``note``: RVL
  files handwriting as a class of its own) keeps bias and weights 0 and is ``uncalibrated``: a page
  predicted as one goes to review, as nothing measured how often that prediction is right. The text
  scores enter whole, with one learned scale, so the head can only move them where layout says so; with
  127 scans a free model over all inputs did worse than the text alone.
- Out of scope: a logistic regression over ``z`` and how sure the text model is (its top score and entropy
  over the head's classes) gives the probability that the page is none of the classes.
- The confidence is the top class score times (1 - out of scope); below the head's ``review_threshold``
  (calibrated with cross-validation on the real scans) a document goes to review.

``scan_head.json`` is optional in a model directory: a model without one, or a page without a layout (a
PDF's text layer), is served by the text model alone, with the model's own review threshold.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from docflow.domain.layout import LAYOUT_VERSION
from docflow.domain.model_files import SCAN_HEAD_FILE

logger = logging.getLogger(__name__)

# A text probability is floored here before its log: a class the text model rules out stays finite.
PROBABILITY_FLOOR = 1e-6
OUT_OF_SCOPE_INPUTS = ("text_top_score", "text_entropy")


class ScanHeadSpec(BaseModel):
    """scan_head.json."""

    model_config = ConfigDict(frozen=True, extra="allow")

    layout_version: str
    features: list[str] = Field(min_length=1)
    mean: list[float]
    scale: list[float]
    classes: list[str] = Field(min_length=2)
    # Classes no real scan was labelled with: scored by their text score alone, never classified automatically.
    uncalibrated: list[str] = Field(default_factory=list)
    text_scale: float
    bias: list[float]
    weights: list[list[float]]  # [feature][class]
    oos_mean: list[float]
    oos_scale: list[float]
    oos_coef: list[float]
    oos_intercept: float
    review_threshold: float = Field(ge=0.0, le=1.0)
    # A page with an out-of-scope probability at or over this is sent to review as out of scope.
    out_of_scope_threshold: float = Field(default=0.5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _shapes(self) -> ScanHeadSpec:
        n, k = len(self.features), len(self.classes)
        if len(self.mean) != n or len(self.scale) != n:
            raise ValueError(f"mean and scale need {n} values, one per feature")
        if len(self.bias) != k or len(self.weights) != n or any(len(row) != k for row in self.weights):
            raise ValueError(f"bias needs {k} values and weights {n} rows of {k}")
        if not set(self.uncalibrated) <= set(self.classes):
            raise ValueError("uncalibrated names classes the head does not score")
        m = n + len(OUT_OF_SCOPE_INPUTS)
        if not (len(self.oos_mean) == len(self.oos_scale) == len(self.oos_coef) == m):
            raise ValueError(f"the out-of-scope model needs {m} inputs")
        return self


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def text_log_scores(text_probabilities: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """log p_text of the head's classes ([..., n_head_classes]), floored."""
    return np.log(np.clip(text_probabilities[..., class_index], PROBABILITY_FLOOR, 1.0))


def out_of_scope_inputs(log_scores: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The out-of-scope model's inputs: the standardized layout, then how sure the text model is among the
    head's classes (top score, entropy). The training side builds them with this same function."""
    probs = softmax(log_scores)
    entropy = -(probs * np.log(probs + 1e-12)).sum(axis=-1, keepdims=True)
    return np.concatenate([z, probs.max(axis=-1, keepdims=True), entropy], axis=-1)


class ScanHead:
    """One loaded scan_head.json, for a model whose classes are ``model_labels``."""

    def __init__(self, spec: ScanHeadSpec, model_labels: tuple[str, ...]) -> None:
        unknown = [c for c in spec.classes if c not in model_labels]
        if unknown:
            raise ValueError(f"the scan head names classes the model does not have: {unknown}")
        self.spec = spec
        self.classes = tuple(spec.classes)
        self.class_index = np.array([model_labels.index(c) for c in spec.classes])
        self.features = tuple(spec.features)
        self._mean = np.array(spec.mean)
        self._scale = np.array(spec.scale)
        self._bias = np.array(spec.bias)
        self._weights = np.array(spec.weights)
        self._oos_mean = np.array(spec.oos_mean)
        self._oos_scale = np.array(spec.oos_scale)
        self._oos_coef = np.array(spec.oos_coef)

    @property
    def review_threshold(self) -> float:
        return self.spec.review_threshold

    @property
    def layout_version(self) -> str:
        return self.spec.layout_version

    def standardize(self, layout: dict[str, float]) -> np.ndarray:
        """z-scores of the head's features; a feature the page lacks counts as the average page's."""
        raw = np.array([layout.get(name, mean) for name, mean in zip(self.features, self._mean, strict=True)])
        return (raw - self._mean) / self._scale

    def apply(self, text_probabilities: np.ndarray, layout: dict[str, float]) -> tuple[np.ndarray, float]:
        """(class scores in ``classes`` order, summing to 1; out-of-scope probability) for one page."""
        raw = np.array([[layout.get(name, mean) for name, mean in zip(self.features, self._mean, strict=True)]])
        scores, out_of_scope = self.apply_batch(np.asarray(text_probabilities, dtype=np.float64)[None, :], raw)
        return scores[0], float(out_of_scope[0])

    def apply_batch(self, text_probabilities: np.ndarray, layout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``apply`` for n pages at once: text probabilities [n, model classes], raw layout [n, features] in
        ``features`` order. The one definition of the head's arithmetic (training scores its folds with it)."""
        log_scores = text_log_scores(text_probabilities, self.class_index)
        z = (layout - self._mean) / self._scale
        scores = softmax(self.spec.text_scale * log_scores + self._bias + z @ self._weights)
        inputs = (out_of_scope_inputs(log_scores, z) - self._oos_mean) / self._oos_scale
        logits = np.clip(inputs @ self._oos_coef + self.spec.oos_intercept, -50.0, 50.0)
        return scores, 1.0 / (1.0 + np.exp(-logits))


def load_scan_head(model_dir: Path, model_labels: tuple[str, ...]) -> ScanHead | None:
    """The model directory's scan head; None when it has none, or one fitted with another layout definition
    than this runtime computes (then the text model serves alone, and a warning says so)."""
    path = Path(model_dir) / SCAN_HEAD_FILE
    if not path.is_file():
        return None
    try:
        spec = ScanHeadSpec.model_validate_json(path.read_bytes())
        head = ScanHead(spec, model_labels)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if spec.layout_version != LAYOUT_VERSION:
        logger.warning(
            "%s was fitted on layout features v%s, this runtime computes v%s: classifying by text alone; "
            "fit the scan head again (docflow train --scans)",
            path,
            spec.layout_version,
            LAYOUT_VERSION,
        )
        return None
    return head
