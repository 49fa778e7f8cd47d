"""Per-class precision, recall, F1 and support from true and predicted labels, with accuracy and the macro and
support-weighted F1: the one place Docflow scores a classifier's predictions (``docflow eval``, the
held-out figures training writes to metrics.json, the promotion gate, the scan head's summary).

Pure Python and numpy, no scikit-learn: the gate runs in a Lambda whose layers have no room for scikit-learn
and scipy, and ``docflow eval`` runs on the runtime install, which has neither. By default the numbers are
scikit-learn's, bit for bit: ``precision_recall_fscore_support(labels=labels, zero_division=0)``,
``f1_score(labels=labels, average="macro" / "weighted", zero_division=0)`` and ``accuracy_score``
(tests/unit/test_class_metrics.py holds them to it).

What counts:
- only ``labels`` are scored, in the order given, whether or not they occur: a class with no true example
  has recall 0 and F1 0 (precision from its predictions, 0 if none) and still counts in the macro mean;
  the caller chooses the labels (all the model's classes, or only those present in ``y_true``);
- a prediction of anything else (a class outside ``labels``, ``None`` for no prediction) is a miss for the
  true class and counts against no class's precision; a true label outside ``labels`` counts only in
  the accuracy;
- every ratio whose denominator is 0 is 0 (scikit-learn's ``zero_division=0``);
- accuracy is over every position of ``y_true``, labels or not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

# How the F1s and their means are rounded; the values agree to ~1e-16 but not bit for bit, and callers
# print full floats (metrics.json, `docflow eval --json`), so each keeps the arithmetic it always had:
# - "sklearn": F1 = 2·tp / (support + predicted), means through numpy (np.mean / np.average):
#   scikit-learn's arithmetic, which training's metrics.json (sklearn itself) and the gate always had;
# - "python": F1 = 2·P·R / (P + R) from the already rounded precision P and recall R, means as Python
#   sum() / len(): `docflow eval`'s arithmetic since its first report.
Arithmetic = Literal["sklearn", "python"]


@dataclass(frozen=True)
class ClassScore:
    precision: float
    recall: float
    f1: float
    support: int  # true examples of the class
    predicted: int  # predictions of the class, right or wrong


@dataclass(frozen=True)
class ClassMetrics:
    per_class: dict[str, ClassScore]  # in the order of the labels asked for
    accuracy: float
    macro_f1: float  # unweighted mean of per_class F1; 0 with no labels
    weighted_f1: float  # mean of per_class F1 weighted by support; the unweighted mean when no label has any


def class_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    labels: Sequence[str],
    *,
    arithmetic: Arithmetic = "sklearn",
) -> ClassMetrics:
    """Score ``y_pred`` against ``y_true`` (same length) for each of ``labels`` (distinct)."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct: {list(labels)}")
    support = Counter(y_true)
    predicted = Counter(y_pred)
    hits = Counter(t for t, p in zip(y_true, y_pred, strict=True) if t == p)
    per_class = {}
    for label in labels:
        tp, n_true, n_pred = hits[label], support[label], predicted[label]
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        if arithmetic == "python":
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        else:
            f1 = 2 * tp / (n_true + n_pred) if n_true + n_pred else 0.0
        per_class[label] = ClassScore(precision, recall, f1, n_true, n_pred)
    f1s = [s.f1 for s in per_class.values()]
    weights = [s.support for s in per_class.values()]
    if not f1s:
        macro_f1 = weighted_f1 = 0.0
    elif arithmetic == "python":
        macro_f1 = sum(f1s) / len(f1s)
        weighted_f1 = sum(f * w for f, w in zip(f1s, weights, strict=True)) / sum(weights) if sum(weights) else macro_f1
    else:
        f1_array = np.asarray(f1s, dtype=np.float64)
        macro_f1 = float(np.mean(f1_array))
        # scikit-learn's np.average over int64 supports; it falls back to the plain mean when they sum to 0.
        weighted_f1 = (
            float(np.average(f1_array, weights=np.asarray(weights, dtype=np.int64))) if sum(weights) else macro_f1
        )
    accuracy = sum(hits.values()) / len(y_true) if len(y_true) else 0.0
    return ClassMetrics(per_class=per_class, accuracy=accuracy, macro_f1=macro_f1, weighted_f1=weighted_f1)
