"""Population stability index per signal: a crafted shifted window against an unshifted one."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from docflow.domain.drift import (
    BASELINE_FILE,
    CONFIDENCE_EDGES,
    EPSILON,
    BaselineMissingError,
    DriftBaseline,
    Observation,
    Signal,
    assess_drift,
    build_baseline,
    histogram,
    load_baseline,
    population_stability_index,
    served_version,
    write_baseline,
)

pytestmark = pytest.mark.unit

LABELS = ["email", "form", "letter", "memo", "resume"]
CLASS_SHARES = {"email": 0.3, "form": 0.2, "letter": 0.25, "memo": 0.2, "resume": 0.05}
# A model that is mostly sure of itself: most confidences above 0.8, a tail down to 0.3.
CONFIDENCE_SHARES = {0.35: 0.05, 0.55: 0.1, 0.75: 0.15, 0.85: 0.2, 0.95: 0.5}


def _draw(rng: random.Random, n: int, class_shares: dict[str, float], confidence_shares: dict[float, float]) -> list:
    classes = rng.choices(list(class_shares), weights=list(class_shares.values()), k=n)
    centres = rng.choices(list(confidence_shares), weights=list(confidence_shares.values()), k=n)
    return [
        Observation(predicted_class=c, confidence=min(1.0, m + rng.uniform(-0.04, 0.04)), model_version="7")
        for c, m in zip(classes, centres, strict=True)
    ]


@pytest.fixture(scope="module")
def baseline() -> DriftBaseline:
    held_out = _draw(random.Random(1), 2000, CLASS_SHARES, CONFIDENCE_SHARES)
    return build_baseline(
        [o.predicted_class for o in held_out],
        [o.confidence for o in held_out],
        LABELS,
        model_name="docflow-classifier",
        model_version="7",
    )


def test_histogram_bins_are_fixed_and_the_last_bin_is_closed() -> None:
    assert histogram([0.0, 0.05, 0.1, 0.95, 1.0, 1.2, -0.1], CONFIDENCE_EDGES) == [3, 1, 0, 0, 0, 0, 0, 0, 0, 3]


def test_psi_matches_the_formula_and_is_zero_for_identical_populations() -> None:
    assert population_stability_index([10, 20, 70], [10, 20, 70]) == 0.0
    expected = (0.5 - 0.2) * math.log(0.5 / 0.2) + (0.5 - 0.8) * math.log(0.5 / 0.8)
    assert population_stability_index([20, 80], [50, 50]) == pytest.approx(expected)
    # An empty bin on either side counts as epsilon, so the score is finite and large
    empty = population_stability_index([100, 0], [50, 50])
    assert empty == pytest.approx((0.5 - 1.0) * math.log(0.5) + (0.5 - EPSILON) * math.log(0.5 / EPSILON))
    with pytest.raises(ValueError):
        population_stability_index([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        population_stability_index([1, 2], [0, 0])


def test_baseline_counts_every_class_and_bins_every_prediction(baseline: DriftBaseline) -> None:
    assert list(baseline.class_counts) == LABELS and sum(baseline.class_counts.values()) == 2000
    assert baseline.confidence.edges == list(CONFIDENCE_EDGES) and sum(baseline.confidence.counts) == 2000
    # A class no held-out document was predicted as is still listed, at zero
    only_two = build_baseline(["memo", "memo", "form"], [0.9, 0.8, 0.5], LABELS, model_name="m", model_version="1")
    assert only_two.class_counts == {"email": 0, "form": 1, "letter": 0, "memo": 2, "resume": 0}


def test_unshifted_window_is_stable(baseline: DriftBaseline) -> None:
    window = _draw(random.Random(2), 500, CLASS_SHARES, CONFIDENCE_SHARES)
    report = assess_drift(baseline, window, threshold=0.2, min_predictions=200)
    assert report.verdict == "stable" and report.n_predictions == 500
    for signal in report.signals:
        assert signal.psi is not None and signal.psi < 0.05, signal
        assert signal.verdict == "stable"


def test_shifted_window_drifts_on_each_shifted_signal(baseline: DriftBaseline) -> None:
    # Given a window where forms flood in and the model is far less sure of itself
    classes = {"email": 0.1, "form": 0.6, "letter": 0.1, "memo": 0.15, "resume": 0.05}
    unsure = {0.35: 0.3, 0.55: 0.3, 0.75: 0.2, 0.85: 0.1, 0.95: 0.1}
    report = assess_drift(baseline, _draw(random.Random(3), 500, classes, unsure), threshold=0.2, min_predictions=200)
    # Then both signals are scored above the threshold
    assert report.verdict == "drift"
    assert report.score(Signal.CLASS_DISTRIBUTION) > 0.2  # type: ignore[operator]
    assert report.score(Signal.PREDICTION_CONFIDENCE) > 0.2  # type: ignore[operator]
    # And a window shifted in confidence only drifts on that signal alone
    only_confidence = assess_drift(baseline, _draw(random.Random(4), 500, CLASS_SHARES, unsure), threshold=0.2)
    verdicts = {s.signal: s.verdict for s in only_confidence.signals}
    assert verdicts == {Signal.CLASS_DISTRIBUTION: "stable", Signal.PREDICTION_CONFIDENCE: "drift"}
    # The threshold is the operator's: the same window under a higher bar is stable
    assert assess_drift(baseline, _draw(random.Random(3), 500, classes, unsure), threshold=50.0).verdict == "stable"


def test_empty_or_small_window_gives_no_score(baseline: DriftBaseline) -> None:
    empty = assess_drift(baseline, [], min_predictions=200)
    assert empty.verdict == "insufficient_data" and empty.n_predictions == 0
    assert all(s.psi is None and s.verdict == "insufficient_data" for s in empty.signals)
    small = assess_drift(baseline, _draw(random.Random(5), 50, CLASS_SHARES, CONFIDENCE_SHARES), min_predictions=200)
    assert small.verdict == "insufficient_data" and small.n_predictions == 50


def test_classes_missing_on_either_side_count(baseline: DriftBaseline) -> None:
    # Given a window where "resume" never appears and a class the baseline never saw ("invoice") does
    window = _draw(random.Random(6), 400, {**CLASS_SHARES, "resume": 0.0}, CONFIDENCE_SHARES)
    window += [Observation(predicted_class="invoice", confidence=0.9, model_version="7")] * 40
    report = assess_drift(baseline, window, min_predictions=200)
    classes = next(s for s in report.signals if s.signal == Signal.CLASS_DISTRIBUTION)
    # Then both sides list both classes, each missing share at zero, and the score stays finite but drifts
    assert classes.baseline["invoice"] == 0.0 and classes.window["resume"] == 0.0
    assert classes.window["invoice"] == pytest.approx(40 / 440)
    assert classes.psi is not None and math.isfinite(classes.psi) and classes.verdict == "drift"


def test_only_the_served_versions_predictions_are_compared(baseline: DriftBaseline) -> None:
    ours = _draw(random.Random(7), 300, CLASS_SHARES, CONFIDENCE_SHARES)
    theirs = [Observation(predicted_class="form", confidence=0.3, model_version="6")] * 300
    report = assess_drift(baseline, ours + theirs, model_version="7")
    assert report.n_predictions == 300 and report.n_other_versions == 300 and report.verdict == "stable"


def test_baseline_round_trip_and_a_model_without_one(tmp_path: Path, baseline: DriftBaseline) -> None:
    # A model trained before baselines existed: a clear message naming the file and the way out
    with pytest.raises(BaselineMissingError, match=r"has no baseline\.json.*[Rr]etrain"):
        load_baseline(tmp_path)
    (tmp_path / BASELINE_FILE).write_text('{"model_name": "x"}')
    with pytest.raises(BaselineMissingError, match="is not a drift baseline"):
        load_baseline(tmp_path)
    write_baseline(tmp_path, baseline)
    assert load_baseline(tmp_path) == baseline
    # The served version is config.json's (a published champion is stamped with its registry number)
    assert served_version(tmp_path, baseline) == "7"
    (tmp_path / "config.json").write_text(json.dumps({"version": "12", "content_version": "7"}))
    assert served_version(tmp_path, baseline) == "12"


def test_report_carries_its_window(baseline: DriftBaseline) -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    report = assess_drift(baseline, [], window_start=start, window_end=end)
    assert (report.window_start, report.window_end, report.threshold, report.model_version) == (start, end, 0.2, "7")
    with pytest.raises(ValueError):
        assess_drift(baseline, [], threshold=0.0)
