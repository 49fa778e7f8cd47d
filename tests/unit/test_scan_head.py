"""The scan head: fitted on labelled scans (docflow_training.scan_head), served by the classifier runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from docflow.domain.classifier import TextClassifier, load_classifier, model_fingerprint
from docflow.domain.layout import FEATURE_NAMES, LAYOUT_VERSION
from docflow.domain.model_files import SCAN_HEAD_FILE
from docflow.domain.scan_head import ScanHead, ScanHeadSpec
from docflow.values import ReviewCode
from docflow_training.scan_head import (
    ScanHeadConfig,
    ScanHeadError,
    ScanSet,
    choose_threshold,
    fit_scan_head,
    predict,
    summarize,
    text_only,
)
from docflow_training.train import TrainConfig, run_training

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
LABELS = ["email", "news_article", "resume"]
N_FEATURES = len(FEATURE_NAMES)
CONFIG = ScanHeadConfig(repeats=2)


def synthetic_scans(seed: int = 0, per_class: int = 14, out_of_scope: int = 14) -> ScanSet:
    """Scans the text model reads badly: it calls every in-scope page 'email' with 0.6, yet feature 0 tells
    news pages (high) from email pages (low), and feature 1 marks pages of no class (a budget, a folder).
    Resumes the text model does get right."""
    rng = np.random.default_rng(seed)
    probs, layout, labels = [], [], []
    for label in ("email", "news_article", "resume", "budget"):
        count = out_of_scope if label == "budget" else per_class
        for _ in range(count):
            p = {"resume": [0.1, 0.1, 0.8]}.get(label, [0.6, 0.3, 0.1])
            x = rng.normal(0.0, 0.3, N_FEATURES)
            x[0] += {"news_article": 2.0, "email": -2.0}.get(label, 0.0)
            x[1] += 3.0 if label == "budget" else 0.0
            probs.append(p)
            layout.append(x)
            labels.append(label)
    names = [f"{label}/{i}.tif" for i, label in enumerate(labels)]
    return ScanSet(np.array(probs, dtype=np.float64), np.array(layout), labels, names)


@pytest.fixture(scope="module")
def fitted():
    return fit_scan_head(synthetic_scans(), LABELS, CONFIG)


def test_the_head_learns_what_the_layout_says_and_the_figures_are_cross_validated(fitted) -> None:
    scans = synthetic_scans()
    alone = text_only(scans, LABELS, threshold=0.5)
    report = fitted.report
    assert alone["top1"] == pytest.approx(2 / 3)  # email and resume right, every news page called email
    assert report["top1"] > 0.9
    assert report["recall"]["news_article"] > 0.9
    # Budget pages get a class from the text model alone; the head calls them out of scope.
    assert alone["out_of_scope_classified_share"] == 1.0
    assert report["out_of_scope_classified_share"] <= 0.1
    assert report["classified_precision"] >= 0.9
    # Cross-validated: every scan is predicted once per repeat, by a head fitted without it.
    assert report["in_scope"] == 42 * CONFIG.repeats and report["out_of_scope"] == 14 * CONFIG.repeats
    assert len(report["predictions"]) == len(scans.labels)
    assert {p["name"] for p in report["predictions"]} == set(scans.names)


def test_the_head_scores_every_class_of_the_model(fitted) -> None:
    assert fitted.spec.classes == LABELS
    assert fitted.spec.uncalibrated == []
    assert fitted.spec.layout_version == LAYOUT_VERSION
    assert 0.0 < fitted.spec.review_threshold <= 1.0


def without(scans: ScanSet, label: str) -> ScanSet:
    keep = np.array([x != label for x in scans.labels])
    return ScanSet(
        scans.text_probabilities[keep],
        scans.layout[keep],
        [x for x, k in zip(scans.labels, keep, strict=True) if k],
        [x for x, k in zip(scans.names, keep, strict=True) if k],
    )


def test_a_class_without_scans_is_scored_by_its_text_but_never_classified_automatically() -> None:
    # No resume among the scans: the head still scores resume (its text score passing through) and a page
    # that reads as one is predicted resume, but it goes to a person.
    scans = without(synthetic_scans(), "resume")
    fitted = fit_scan_head(scans, LABELS, CONFIG)
    spec = fitted.spec
    assert spec.classes == LABELS and spec.uncalibrated == ["resume"]
    resume = LABELS.index("resume")
    assert spec.bias[resume] == 0.0 and all(row[resume] == 0.0 for row in spec.weights)
    head = ScanHead(spec, tuple(LABELS))
    scores, _ = head.apply(np.array([0.05, 0.05, 0.9]), dict.fromkeys(FEATURE_NAMES, 0.0))
    assert int(np.argmax(scores)) == resume
    assert all(p["predicted"] != "resume" or p["status"] == "NEEDS_REVIEW" for p in fitted.report["predictions"])


def test_the_runtime_computes_what_the_file_says(fitted) -> None:
    # The head's arithmetic written out again from scan_head.json's numbers, apart from the code under test.
    spec = json.loads(fitted.spec.model_dump_json())
    scans = synthetic_scans(seed=1)
    best, confidence, out_of_scope = predict(fitted.spec, LABELS, scans.text_probabilities, scans.layout)
    head = ScanHead(fitted.spec, tuple(LABELS))
    for i, probabilities in enumerate(scans.text_probabilities):
        z = (scans.layout[i] - np.array(spec["mean"])) / np.array(spec["scale"])
        log_p = np.log(np.clip(probabilities, 1e-6, 1.0))
        logits = spec["text_scale"] * log_p + np.array(spec["bias"]) + z @ np.array(spec["weights"])
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        p = np.exp(log_p - log_p.max()) / np.exp(log_p - log_p.max()).sum()
        entropy = -(p * np.log(p + 1e-12)).sum()
        inputs = (np.concatenate([z, [p.max(), entropy]]) - np.array(spec["oos_mean"])) / np.array(spec["oos_scale"])
        expected_oos = 1 / (1 + np.exp(-(inputs @ np.array(spec["oos_coef"]) + spec["oos_intercept"])))
        scores, oos = head.apply(probabilities, dict(zip(FEATURE_NAMES, scans.layout[i], strict=True)))
        assert scores == pytest.approx(expected, abs=1e-9)
        assert oos == pytest.approx(expected_oos, abs=1e-9)
        assert int(np.argmax(expected)) == best[i]
        assert expected.max() * (1 - expected_oos) == pytest.approx(confidence[i], abs=1e-9)
        assert expected_oos == pytest.approx(out_of_scope[i], abs=1e-9)
    budget = np.array(scans.labels) == "budget"
    assert out_of_scope[budget].min() > 0.5 > out_of_scope[~budget].max()


def test_a_feature_the_page_lacks_counts_as_the_average_page(fitted) -> None:
    head = ScanHead(fitted.spec, tuple(LABELS))
    z = head.standardize({})
    assert np.allclose(z, 0.0)


def test_threshold_is_the_lowest_that_reaches_the_target() -> None:
    confidence = np.array([0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    correct = np.array([False, False, True, False, True, True, True])
    assert choose_threshold(correct, confidence, 0.75) == pytest.approx(0.5)
    assert choose_threshold(correct, confidence, 0.95) == pytest.approx(0.7)
    assert choose_threshold(np.zeros(7, dtype=bool), confidence, 0.5) == 1.0


def test_too_few_scans_or_classes_is_a_clear_error() -> None:
    scans = synthetic_scans(per_class=2, out_of_scope=2)
    with pytest.raises(ScanHeadError, match="at least 20"):
        fit_scan_head(scans, LABELS, CONFIG)
    one_class = ScanSet(np.tile([0.6, 0.3, 0.1], (30, 1)), np.zeros((30, N_FEATURES)), ["email"] * 30, ["x"] * 30)
    with pytest.raises(ScanHeadError, match="at least 2"):
        fit_scan_head(one_class, LABELS, CONFIG)


def test_no_out_of_scope_scans_means_nothing_is_called_out_of_scope() -> None:
    scans = synthetic_scans(out_of_scope=0)
    fitted = fit_scan_head(scans, LABELS, CONFIG)
    _, _, oos = predict(fitted.spec, LABELS, scans.text_probabilities, scans.layout)
    assert oos.max() < 1e-6


def test_summary_counts_out_of_scope_classified_as_wrong() -> None:
    rows = [
        {"label": "email", "predicted": "email", "status": "CLASSIFIED"},
        {"label": "email", "predicted": "resume", "status": "NEEDS_REVIEW"},
        {"label": "budget", "predicted": "email", "status": "CLASSIFIED"},
        {"label": "budget", "predicted": "email", "status": "NEEDS_REVIEW"},
    ]
    summary = summarize(rows, LABELS)
    assert summary["top1"] == 0.5
    assert summary["classified_share"] == 0.5
    assert summary["classified_precision"] == 1.0
    assert summary["out_of_scope_classified_share"] == 0.5
    assert summary["precision_all_classified"] == 0.5


def test_spec_with_mismatched_shapes_is_refused(fitted) -> None:
    data = fitted.spec.model_dump()
    data["bias"] = data["bias"][:-1]
    with pytest.raises(ValueError, match="bias"):
        ScanHeadSpec.model_validate(data)


# -- served by the classifier ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_with_head(tmp_path_factory: pytest.TempPathFactory, fitted) -> Path:
    model_dir = tmp_path_factory.mktemp("model") / "classifier"
    run_training(CORPUS, model_dir, TrainConfig(seed=7, vocab_size=400, c_grid=(10.0,), holdout_fraction=0.25))
    (model_dir / SCAN_HEAD_FILE).write_text(fitted.spec.model_dump_json())
    return model_dir


NEWS_PAGE = dict(zip(FEATURE_NAMES, [2.0] + [0.0] * (N_FEATURES - 1), strict=True))
# Far out on the feature that marks pages of no class: however sure the text model is of its class.
BUDGET_PAGE = dict(zip(FEATURE_NAMES, [0.0, 10.0] + [0.0] * (N_FEATURES - 2), strict=True))
EMAIL_TEXT = "From: kim@example.com To: lee@example.com Subject: Re: forwarded email, please reply"


def test_with_a_layout_the_head_decides(model_with_head: Path) -> None:
    model = TextClassifier(model_with_head)
    assert model.scan_head is not None
    text_alone = model.predict(EMAIL_TEXT)
    assert text_alone.out_of_scope is None
    assert text_alone.predicted_class == "email"
    on_a_budget_page = model.predict(EMAIL_TEXT, (BUDGET_PAGE, LAYOUT_VERSION))
    assert on_a_budget_page.out_of_scope is not None and on_a_budget_page.out_of_scope > 0.5
    assert on_a_budget_page.confidence < text_alone.confidence
    assert sum(on_a_budget_page.scores.values()) == pytest.approx(1.0, abs=1e-5)
    review = model.review(on_a_budget_page)
    assert review is not None and review[0] is ReviewCode.OUT_OF_SCOPE
    assert "none of the classes" in review[1]


def test_layout_of_another_definition_is_not_fed_to_the_head(model_with_head: Path) -> None:
    model = TextClassifier(model_with_head)
    assert model.predict(EMAIL_TEXT, (BUDGET_PAGE, "0-old")).out_of_scope is None


def test_a_page_read_as_an_uncalibrated_class_goes_to_a_person(model_with_head: Path, tmp_path: Path) -> None:
    copy = tmp_path / "uncalibrated"
    shutil.copytree(model_with_head, copy)
    spec = json.loads((copy / SCAN_HEAD_FILE).read_text())
    spec["uncalibrated"] = ["email"]
    (copy / SCAN_HEAD_FILE).write_text(json.dumps(spec))
    model = TextClassifier(copy)
    prediction = model.predict(EMAIL_TEXT, (NEWS_PAGE | {"log_words": 0.0}, LAYOUT_VERSION))
    if prediction.predicted_class != "email":
        prediction = prediction.model_copy(update={"predicted_class": "email"})
    review = model.review(prediction.model_copy(update={"out_of_scope": 0.0}), override=0.0)
    assert review is not None and review[0] is ReviewCode.LOW_CONFIDENCE
    assert "no real scan calibrated" in review[1]


def test_review_codes_and_thresholds(model_with_head: Path) -> None:
    model = TextClassifier(model_with_head)
    prediction = model.predict(EMAIL_TEXT, (NEWS_PAGE, LAYOUT_VERSION))
    assert model.review_threshold(None, prediction) == model.scan_head.review_threshold  # type: ignore[union-attr]
    assert model.review_threshold(None, model.predict(EMAIL_TEXT)) == model.review_threshold()
    assert model.review(prediction, has_text=False) == (
        ReviewCode.NO_TEXT,
        "no text could be extracted from the document",
    )
    low = model.review(prediction, override=0.999)
    assert low is not None and low[0] is ReviewCode.LOW_CONFIDENCE
    assert model.review(prediction, override=0.0) is None


def test_a_head_fitted_on_another_layout_definition_is_not_used(model_with_head: Path, tmp_path: Path) -> None:
    copy = tmp_path / "old"
    shutil.copytree(model_with_head, copy)
    spec = json.loads((copy / SCAN_HEAD_FILE).read_text())
    spec["layout_version"] = "0-old"
    (copy / SCAN_HEAD_FILE).write_text(json.dumps(spec))
    model = TextClassifier(copy)
    assert model.scan_head is None
    assert model.predict(EMAIL_TEXT, (BUDGET_PAGE, LAYOUT_VERSION)).out_of_scope is None


def test_a_model_without_a_head_serves_by_text(model_with_head: Path, tmp_path: Path) -> None:
    copy = tmp_path / "plain"
    shutil.copytree(model_with_head, copy)
    (copy / SCAN_HEAD_FILE).unlink()
    model = TextClassifier(copy)
    assert model.scan_head is None
    assert model.predict(EMAIL_TEXT, (BUDGET_PAGE, LAYOUT_VERSION)).out_of_scope is None


def test_replacing_the_head_is_a_new_model_for_a_warm_process(model_with_head: Path, tmp_path: Path) -> None:
    copy = tmp_path / "republished"
    shutil.copytree(model_with_head, copy)
    before = model_fingerprint(copy)
    first = load_classifier(copy)
    (copy / SCAN_HEAD_FILE).unlink()
    assert model_fingerprint(copy) != before
    assert load_classifier(copy) is not first
    assert load_classifier(copy).scan_head is None


def test_a_broken_head_file_is_a_clear_incompatibility(model_with_head: Path, tmp_path: Path) -> None:
    from docflow.domain.classifier import ModelIncompatibleError

    copy = tmp_path / "broken"
    shutil.copytree(model_with_head, copy)
    (copy / SCAN_HEAD_FILE).write_text('{"layout_version": "1"}')
    with pytest.raises(ModelIncompatibleError, match=SCAN_HEAD_FILE):
        TextClassifier(copy)
