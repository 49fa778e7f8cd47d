"""Prediction drift: a recent window of predictions against the baseline stored with the model.

At training time the held-out split's predictions are summarised into ``baseline.json`` beside the
model: how often each class was predicted and a histogram of the prediction confidence on fixed bins.
Later, the predictions of a recent window are summarised the same way and compared per signal with the
population stability index

    PSI = sum_i (q_i - p_i) * ln(q_i / p_i)

where p is the baseline's share of bin (or class) i and q the window's; an empty bin on either side is
given a share of ``EPSILON`` so the sum stays finite. Rule of thumb: below 0.1 the populations match, from
0.1 to 0.25 they moved, above 0.25 they differ. Pure functions: no AWS, no environment, no clock.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from docflow.domain.model_files import BASELINE_FILE, CONFIG_FILE

if TYPE_CHECKING:
    from docflow.ports import RecordStore

MODEL_CONFIG_FILE = CONFIG_FILE
# Fixed bins: every baseline and every window of every model is cut the same way.
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))
EPSILON = 1e-4
# The statuses whose records carry the model's prediction (a REVIEWED record keeps the one that queued it:
# leaving those out would drop exactly the low-confidence predictions from the window).
PREDICTED_STATUSES = ("CLASSIFIED", "NEEDS_REVIEW", "REVIEWED")


class Signal(StrEnum):
    CLASS_DISTRIBUTION = "class_distribution"
    PREDICTION_CONFIDENCE = "prediction_confidence"


Verdict = Literal["stable", "drift", "insufficient_data"]


class BaselineMissingError(FileNotFoundError):
    """The model has no (readable) drift baseline: it was trained before baselines were stored."""


class ConfidenceHistogram(BaseModel):
    model_config = ConfigDict(frozen=True)

    edges: list[float]  # len(counts) + 1 ascending edges; the last bin includes its upper edge
    counts: list[int]

    @model_validator(mode="after")
    def _shape(self) -> ConfidenceHistogram:
        if len(self.edges) != len(self.counts) + 1 or len(self.counts) < 1:
            raise ValueError(f"{len(self.edges)} edges cannot bound {len(self.counts)} bins")
        if any(b <= a for a, b in pairwise(self.edges)):
            raise ValueError("histogram edges must be strictly ascending")
        return self


class DriftBaseline(BaseModel):
    """baseline.json: the held-out split's predictions, summarised."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_name: str
    model_version: str
    created_at: str | None = None
    source: str = "held-out split"
    n_predictions: int = Field(ge=1)
    class_counts: dict[str, int]  # every class the model knows, zeros included
    confidence: ConfidenceHistogram


class Observation(BaseModel):
    """One prediction in the window: what was predicted, how sure, by which model version."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    predicted_class: str
    confidence: float
    model_version: str | None = None


class SignalDrift(BaseModel):
    signal: Signal
    psi: float | None  # None when the window is too small to say
    verdict: Verdict
    # bin or class label -> share, for the table and for whoever investigates an alarm
    baseline: dict[str, float]
    window: dict[str, float]


class DriftReport(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    n_predictions: int  # in the window, by this model version
    n_other_versions: int = 0  # in the window, by other model versions (not compared)
    threshold: float
    min_predictions: int
    verdict: Verdict
    signals: list[SignalDrift]

    def score(self, signal: Signal) -> float | None:
        return next(s.psi for s in self.signals if s.signal == signal)


def histogram(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin [edges[i], edges[i+1]); the last bin is closed, values outside are clipped in."""
    counts = [0] * (len(edges) - 1)
    for value in values:
        i = bisect.bisect_right(edges, value) - 1
        counts[min(max(i, 0), len(counts) - 1)] += 1
    return counts


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def population_stability_index(expected: Sequence[int], actual: Sequence[int], epsilon: float = EPSILON) -> float:
    """PSI between two count vectors over the same bins; empty bins count as ``epsilon`` of a share."""
    if len(expected) != len(actual):
        raise ValueError(f"bins differ: {len(expected)} expected vs {len(actual)} actual")
    if sum(expected) <= 0 or sum(actual) <= 0:
        raise ValueError("PSI needs at least one observation on each side")
    total = 0.0
    for p, q in zip(_shares(expected), _shares(actual), strict=True):
        p, q = max(p, epsilon), max(q, epsilon)
        total += (q - p) * math.log(q / p)
    return total


def build_baseline(
    predicted_classes: Sequence[str],
    confidences: Sequence[float],
    labels: Sequence[str],
    *,
    model_name: str,
    model_version: str,
    created_at: str | None = None,
    source: str = "held-out split",
) -> DriftBaseline:
    """Summarise a model's predictions on its held-out split (training time)."""
    if not predicted_classes or len(predicted_classes) != len(confidences):
        raise ValueError("a baseline needs one confidence per prediction and at least one prediction")
    counts = Counter(predicted_classes)
    class_counts = {label: counts.get(label, 0) for label in labels}
    class_counts.update({k: v for k, v in counts.items() if k not in class_counts})
    return DriftBaseline(
        model_name=model_name,
        model_version=model_version,
        created_at=created_at,
        source=source,
        n_predictions=len(predicted_classes),
        class_counts=class_counts,
        confidence=ConfidenceHistogram(edges=list(CONFIDENCE_EDGES), counts=histogram(confidences, CONFIDENCE_EDGES)),
    )


def _bin_labels(edges: Sequence[float]) -> list[str]:
    return [f"{a:.2f}-{b:.2f}" for a, b in pairwise(edges)]


Summary = tuple[list[str], list[int], list[int]]  # bin or class labels, baseline counts, window counts


def _class_signal(baseline: DriftBaseline, window: Sequence[Observation]) -> Summary:
    # Classes the baseline never saw predicted (or a class the model no longer predicts) still count:
    # the union of both sides, each missing side at epsilon.
    observed = Counter(o.predicted_class for o in window)
    classes = list(baseline.class_counts) + sorted(c for c in observed if c not in baseline.class_counts)
    return classes, [baseline.class_counts.get(c, 0) for c in classes], [observed.get(c, 0) for c in classes]


def _confidence_signal(baseline: DriftBaseline, window: Sequence[Observation]) -> Summary:
    edges = baseline.confidence.edges
    return _bin_labels(edges), list(baseline.confidence.counts), histogram((o.confidence for o in window), edges)


def assess_drift(
    baseline: DriftBaseline,
    observations: Sequence[Observation],
    *,
    model_version: str | None = None,
    threshold: float = 0.2,
    min_predictions: int = 200,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    epsilon: float = EPSILON,
) -> DriftReport:
    """PSI per signal between the baseline and the window's predictions by ``model_version`` (the version
    now serving; default the baseline's). Fewer than ``min_predictions`` gives no score: PSI of a small
    sample is inflated by sampling noise alone."""
    if threshold <= 0:
        raise ValueError(f"the drift threshold must be positive, got {threshold}")
    version = model_version or baseline.model_version
    window = [o for o in observations if o.model_version in (None, version)]
    enough = len(window) >= max(min_predictions, 1)
    signals = []
    for signal, summarise in (
        (Signal.CLASS_DISTRIBUTION, _class_signal),
        (Signal.PREDICTION_CONFIDENCE, _confidence_signal),
    ):
        labels, expected, actual = summarise(baseline, window)
        psi = population_stability_index(expected, actual, epsilon) if enough else None
        verdict: Verdict = "insufficient_data" if psi is None else ("drift" if psi > threshold else "stable")
        signals.append(
            SignalDrift(
                signal=signal,
                psi=psi,
                verdict=verdict,
                baseline=dict(zip(labels, _shares(expected), strict=True)),
                window=dict(zip(labels, _shares(actual), strict=True)),
            )
        )
    overall: Verdict = (
        "insufficient_data" if not enough else ("drift" if any(s.verdict == "drift" for s in signals) else "stable")
    )
    return DriftReport(
        model_name=baseline.model_name,
        model_version=version,
        window_start=window_start,
        window_end=window_end,
        n_predictions=len(window),
        n_other_versions=len(observations) - len(window),
        threshold=threshold,
        min_predictions=min_predictions,
        verdict=overall,
        signals=signals,
    )


def check_drift(
    records: RecordStore,
    model_dir: Path,
    *,
    now: datetime,
    window_hours: float,
    threshold: float,
    min_predictions: int,
) -> DriftReport:
    """The drift job (``docflow drift``, the Drift Lambda): the served model's baseline against the
    predictions recorded in the last ``window_hours`` before ``now`` (documents that ended CLASSIFIED or
    NEEDS_REVIEW, each with its latest prediction). Raises BaselineMissingError for a model without one."""
    baseline = load_baseline(model_dir)
    since = now - timedelta(hours=window_hours)
    documents = records.list_documents_updated(PREDICTED_STATUSES, since, now)
    observations = [
        Observation(predicted_class=d.predicted_class, confidence=d.confidence, model_version=d.model_version)
        for d in documents
        if d.predicted_class is not None and d.confidence is not None
    ]
    return assess_drift(
        baseline,
        observations,
        model_version=served_version(model_dir, baseline),
        threshold=threshold,
        min_predictions=min_predictions,
        window_start=since,
        window_end=now,
    )


def load_baseline(model_dir: Path) -> DriftBaseline:
    """The baseline stored with the model in ``model_dir``; a clear error when it is absent or unreadable."""
    path = Path(model_dir) / BASELINE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BaselineMissingError(
            f"the model in {model_dir} has no {BASELINE_FILE}: it was trained before drift baselines were "
            "stored with the model. Retrain it (`make model`, or `docflow train` and promote) to get one."
        ) from None
    try:
        return DriftBaseline.model_validate_json(raw)
    except ValidationError as exc:
        raise BaselineMissingError(f"{path} is not a drift baseline: {exc}") from exc


def served_version(model_dir: Path, baseline: DriftBaseline) -> str:
    """The version predictions of this model directory carry (config.json's; a published champion's is its
    registry number, stamped after training), falling back to the baseline's own."""
    try:
        config = json.loads((Path(model_dir) / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return baseline.model_version
    version = config.get("version") if isinstance(config, Mapping) else None
    return str(version) if version else baseline.model_version


def write_baseline(model_dir: Path, baseline: DriftBaseline) -> Path:
    path = Path(model_dir) / BASELINE_FILE
    path.write_text(baseline.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
