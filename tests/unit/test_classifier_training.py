"""Training on the tiny fixture corpus, the exported ONNX graph, and the runtime that serves it."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from docflow.domain.class_names import canonical_class
from docflow.domain.classifier import (
    REQUIRED_FILES,
    ModelIncompatibleError,
    ModelNotFoundError,
    TextClassifier,
    load_classifier,
    model_fingerprint,
)
from docflow.domain.drift import CONFIDENCE_EDGES, load_baseline
from docflow.domain.text import normalize_text
from docflow.values import Prediction
from docflow_training.data import (
    CorpusError,
    dataset_digest,
    load_corpus,
    stratified_split,
)
from docflow_training.train import TrainConfig, TrainingResult, run_training, train_model

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
# max_length below what max_chars lets through, so the token cap is exercised.
CONFIG = TrainConfig(seed=7, vocab_size=400, c_grid=(1.0, 10.0), cv_folds=3, holdout_fraction=0.25, max_length=20_000)
BPE_CONFIG = CONFIG.model_copy(update={"features": "bpe", "max_length": 2000, "min_frequency": 2})
LABELS = ["email", "news_article", "resume"]

OBVIOUS = {
    "email": "From: kim@example.com To: lee@example.com Subject: Re: forwarded email, please reply. Attachment",
    "news_article": "NEW YORK (AP) - The mayor told reporters on Tuesday, officials said, the newspaper reported.",
    "resume": "Curriculum vitae. Education: B.S. 1975. Experience: analyst. Skills. References upon request.",
}
ODD_INPUTS = ["", "   \n\t ", "\x00\x01\x02", "|||| .... ----", "x", "ünïcödé \ufb01le \uff26\uff55\uff4c\uff4c"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    return run_training(CORPUS, tmp_path_factory.mktemp("model") / "classifier", CONFIG)


@pytest.fixture(scope="module")
def classifier(trained: TrainingResult) -> TextClassifier:
    return TextClassifier(trained.model_dir)


def test_model_directory_holds_the_contract_files(trained: TrainingResult) -> None:
    files = sorted(p.name for p in trained.model_dir.iterdir())
    assert files == sorted([*REQUIRED_FILES, "metrics.json", "baseline.json"])
    assert json.loads((trained.model_dir / "labels.json").read_text()) == LABELS
    config = json.loads((trained.model_dir / "config.json").read_text())
    assert config["name"] == "docflow-classifier"
    assert config["version"] and config["max_length"] == CONFIG.max_length
    assert config["training_data"]["sha256"] == dataset_digest(CORPUS).sha256
    # Nothing left beside it from the staging directory.
    assert [p.name for p in trained.model_dir.parent.iterdir()] == ["classifier"]


def test_drift_baseline_summarises_the_holdout_predictions(trained: TrainingResult) -> None:
    baseline = load_baseline(trained.model_dir)
    metrics = trained.metrics
    assert baseline.model_version == metrics["model_version"] and baseline.n_predictions == metrics["n_holdout"]
    # Class counts are the confusion matrix's column sums: what the model predicted on the held-out split
    matrix = metrics["confusion_matrix"]["matrix"]
    predicted = {label: sum(row[j] for row in matrix) for j, label in enumerate(metrics["confusion_matrix"]["labels"])}
    assert baseline.class_counts == predicted and set(baseline.class_counts) == set(LABELS)
    assert baseline.confidence.edges == list(CONFIDENCE_EDGES)
    assert sum(baseline.confidence.counts) == metrics["n_holdout"]


def test_metrics_describe_the_holdout(trained: TrainingResult) -> None:
    metrics = json.loads((trained.model_dir / "metrics.json").read_text())
    assert metrics == trained.metrics
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "n_train", "n_holdout", "dataset"):
        assert key in metrics
    assert metrics["n_train"] + metrics["n_holdout"] == len(load_corpus(CORPUS))
    assert set(metrics["per_class"]) == set(LABELS)
    assert sum(c["support"] for c in metrics["per_class"].values()) == metrics["n_holdout"]
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    assert metrics["confusion_matrix"]["labels"] == LABELS
    assert matrix.shape == (3, 3) and matrix.sum() == metrics["n_holdout"]
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert metrics["dataset"]["sha256"] == dataset_digest(CORPUS).sha256
    assert metrics["onnx_max_abs_diff"] < 1e-5


@pytest.mark.parametrize("expected", sorted(OBVIOUS))
def test_predicts_the_obvious_class(classifier: TextClassifier, expected: str) -> None:
    prediction = classifier.predict(OBVIOUS[expected])
    assert isinstance(prediction, Prediction)
    assert prediction.predicted_class == expected
    assert prediction.confidence == max(prediction.scores.values())
    assert prediction.model_name == "docflow-classifier"
    assert prediction.model_version == classifier.config.version
    assert prediction.seconds > 0


def test_scores_cover_every_class_and_sum_to_one(classifier: TextClassifier) -> None:
    for text in OBVIOUS.values():
        scores = classifier.predict(text).scores
        assert list(scores) == LABELS
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("text", ODD_INPUTS)
def test_empty_and_junk_text_give_a_valid_prediction(classifier: TextClassifier, text: str) -> None:
    prediction = classifier.predict(text)
    assert prediction.predicted_class in LABELS
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in prediction.scores.values())
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_empty_text_gets_the_models_prior(trained: TrainingResult, classifier: TextClassifier) -> None:
    intercept = trained.fitted.classifier.intercept_
    prior = np.exp(intercept - intercept.max())
    prior /= prior.sum()
    np.testing.assert_allclose(classifier.predict_proba([""])[0], prior, atol=1e-6)


def test_onnx_graph_matches_sklearn(trained: TrainingResult, classifier: TextClassifier) -> None:
    texts = [doc.text for doc in trained.holdout_docs + trained.train_docs] + list(OBVIOUS.values()) + ODD_INPUTS
    onnx_probabilities = classifier.predict_proba(texts, batch_size=5)
    sklearn_probabilities = trained.fitted.predict_proba(texts)
    assert onnx_probabilities.dtype == np.float32
    assert onnx_probabilities.shape == (len(texts), len(LABELS))
    np.testing.assert_allclose(onnx_probabilities, sklearn_probabilities, rtol=0, atol=1e-5)


def test_batching_and_padding_do_not_change_results(classifier: TextClassifier) -> None:
    texts = ["", OBVIOUS["resume"] * 20, *OBVIOUS.values(), "x"]
    one_by_one = np.concatenate([classifier.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(classifier.predict_proba(texts, batch_size=4), one_by_one, atol=1e-6)
    batch = classifier.predict_batch(texts)
    assert [p.predicted_class for p in batch] == [classifier.predict(t).predicted_class for t in texts]
    assert classifier.predict_batch([]) == []


def test_long_text_is_capped_at_max_length(classifier: TextClassifier) -> None:
    huge = "education experience references " * 10_000
    input_ids, attention_mask = classifier.encode([huge, "education"])
    assert input_ids.shape == (2, classifier.config.max_length)
    assert attention_mask[1].sum() >= 1 and attention_mask[0].sum() == classifier.config.max_length
    assert classifier.predict(huge).predicted_class == "resume"


def test_same_seed_gives_identical_model(trained: TrainingResult, tmp_path: Path) -> None:
    again = run_training(CORPUS, tmp_path / "again", CONFIG)
    texts = [*OBVIOUS.values(), *ODD_INPUTS, *(doc.text for doc in trained.holdout_docs)]
    first = TextClassifier(trained.model_dir).predict_proba(texts)
    second = TextClassifier(again.model_dir).predict_proba(texts)
    assert np.array_equal(first, second)
    for name in ("model.onnx", "tokenizer.json", "labels.json"):
        assert (trained.model_dir / name).read_bytes() == (again.model_dir / name).read_bytes()
    assert again.metrics["model_version"] == trained.metrics["model_version"]


def test_retraining_replaces_the_directory(trained: TrainingResult, tmp_path: Path) -> None:
    out = tmp_path / "model"
    shutil.copytree(trained.model_dir, out)  # an earlier model, with a file of an older format
    (out / "stale.txt").write_text("from an older model")
    metrics = train_model(CORPUS, out, CONFIG)
    assert not (out / "stale.txt").exists()
    assert (out / "model.onnx").is_file() and metrics["n_holdout"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_failed_training_leaves_no_staging_directory(tmp_path: Path) -> None:
    (tmp_path / "corpus" / "only_class").mkdir(parents=True)
    (tmp_path / "corpus" / "only_class" / "a.txt").write_text("one class is not a classification problem")
    with pytest.raises(CorpusError, match="at least two classes"):
        train_model(tmp_path / "corpus", tmp_path / "out", CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_missing_model_directory_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="make model") as raised:
        TextClassifier(tmp_path / "nowhere")
    assert "does not exist" in str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)


def test_missing_model_file_is_named(trained: TrainingResult, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(trained.model_dir, partial)
    (partial / "tokenizer.json").unlink()
    with pytest.raises(ModelNotFoundError, match=r"tokenizer\.json.*make model"):
        load_classifier(partial)


def test_model_from_another_normalizer_is_refused(trained: TrainingResult, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(trained.model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "normalizer_version": "0"}))
    with pytest.raises(ModelIncompatibleError, match="normalizer"):
        TextClassifier(other)


def test_load_classifier_is_cached_per_directory(trained: TrainingResult) -> None:
    assert load_classifier(trained.model_dir) is load_classifier(trained.model_dir)


def test_a_directory_replaced_as_a_whole_is_loaded_again(trained: TrainingResult, tmp_path: Path) -> None:
    served = tmp_path / "served"
    shutil.copytree(trained.model_dir, served)
    first = load_classifier(served)
    assert model_fingerprint(served) == model_fingerprint(served)

    staging = tmp_path / "staging"
    shutil.copytree(trained.model_dir, staging)
    config = json.loads((staging / "config.json").read_text())
    (staging / "config.json").write_text(json.dumps({**config, "review_threshold": 0.93}))
    shutil.rmtree(served)
    staging.rename(served)

    again = load_classifier(served)
    assert again is not first and again.review_threshold() == 0.93
    assert load_classifier(served) is again


# --- corpus loading and splitting -------------------------------------------------------------


def test_folder_names_map_to_canonical_classes() -> None:
    assert canonical_class("Report") == "scientific_report"
    assert canonical_class("Scientific") == "scientific_publication"
    assert canonical_class("News") == "news_article"
    assert canonical_class("Memo") == "memo"
    assert canonical_class("invoice") == "invoice"  # feedback corpora may add classes


def test_corpus_decodes_invalid_utf8_and_digest_tracks_content(tmp_path: Path) -> None:
    for label in ("Memo", "Letter"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.txt").write_bytes(b"caf\xe9 \xff " + label.encode())
    docs = load_corpus(tmp_path)
    assert [d.label for d in docs] == ["letter", "memo"]
    assert "\ufffd" in docs[0].text
    before = dataset_digest(tmp_path)
    assert before.n_documents == 2 and before.n_bytes == 2 * len(b"caf\xe9 \xff ") + len(b"MemoLetter")
    assert dataset_digest(tmp_path) == before
    (tmp_path / "Memo" / "a.txt").write_bytes(b"edited")
    assert dataset_digest(tmp_path).sha256 != before.sha256


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "absent")
    with pytest.raises(CorpusError, match="no <class>"):
        dataset_digest(tmp_path)


def test_split_is_stratified_deterministic_and_disjoint() -> None:
    docs = load_corpus(CORPUS)
    train, holdout = stratified_split(docs, 0.25, seed=1)
    assert stratified_split(docs, 0.25, seed=1) == (train, holdout)
    assert stratified_split(docs, 0.25, seed=2) != (train, holdout)
    assert {d.path for d in train}.isdisjoint(d.path for d in holdout)
    assert len(train) + len(holdout) == len(docs)
    for label in LABELS:
        assert sum(d.label == label for d in holdout) == 2
        assert sum(d.label == label for d in train) >= 6


# --- the shared normalizer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Hello\n\n  WORLD\t", "hello world"),
        ("\ufb01le \uff26\uff55\uff4c\uff4c", "file full"),  # ligature, full-width
        ("a\x00b\u200bc", "a bc"),
        ("TOTAL ........ 12", "total . 12"),
        ("", ""),
    ],
)
def test_normalize_text(raw: str, normalized: str) -> None:
    assert normalize_text(raw) == normalized
    assert normalize_text(normalized) == normalized


def test_char_ngrams_pad_each_word() -> None:
    from docflow.domain.text import char_ngrams

    assert char_ngrams("to be", 2, 3) == [" t", "to", "o ", " to", "to ", " b", "be", "e ", " be", "be "]
    assert char_ngrams("", 2, 5) == []


def test_ocr_noise_is_deterministic_and_degrades() -> None:
    from docflow_training.noise import HEAVY, LIGHT, ocr_noise

    text = OBVIOUS["news_article"] + "\n" + OBVIOUS["resume"]
    assert ocr_noise(text, HEAVY, 1) == ocr_noise(text, HEAVY, 1)
    assert ocr_noise(text, HEAVY, 1) != ocr_noise(text, HEAVY, 2)
    assert ocr_noise(text, LIGHT, 1) != text
    assert ocr_noise("", HEAVY, 0) == ""


def test_metrics_hold_the_ocr_noised_holdout_and_review_threshold(trained: TrainingResult) -> None:
    noised = trained.metrics["holdout_ocr_noise"]
    assert 0.0 <= noised["accuracy"] <= 1.0 and set(noised["per_class"]) == set(LABELS)
    review = noised["review_threshold"]
    assert 0.0 <= review["threshold"] < 1.0 and 0.0 < review["coverage"] <= 1.0
    assert review["reached"] == (review["precision_lower_bound"] >= review["target_precision"])
    assert review["precision_lower_bound"] <= review["precision"]
    assert review["confidence"] == CONFIG.review_confidence
    config = json.loads((trained.model_dir / "config.json").read_text())
    assert config["architecture"] == "char-ngram-tfidf-logistic-regression"
    assert config["char_ngram_range"] == [CONFIG.char_ngram_min, CONFIG.char_ngram_max]
    # the served threshold is the stricter of the clean and the noised held-out calibrations, and it is
    # what the runtime uses unless DOCFLOW_REVIEW_THRESHOLD says otherwise
    calibrated = trained.metrics["review_threshold"]
    assert calibrated["holdout_ocr_noise"] == review
    assert calibrated["threshold"] == max(calibrated["holdout"]["threshold"], review["threshold"])
    assert config["review_threshold"] == calibrated["threshold"]
    served = TextClassifier(trained.model_dir)
    assert served.review_threshold() == calibrated["threshold"]
    assert served.review_threshold(0.9) == 0.9


def test_model_without_a_calibrated_threshold_serves_the_default(trained: TrainingResult, tmp_path: Path) -> None:
    from docflow.domain.classifier import DEFAULT_REVIEW_THRESHOLD

    copy = tmp_path / "older-model"
    shutil.copytree(trained.model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["review_threshold"]
    (copy / "config.json").write_text(json.dumps(config))
    assert TextClassifier(copy).review_threshold() == DEFAULT_REVIEW_THRESHOLD


def test_augmentation_adds_seeded_noised_copies(trained: TrainingResult) -> None:
    from docflow_training.train import augment

    docs = trained.train_docs[:3]
    first, again = augment(docs, CONFIG), augment(docs, CONFIG)
    assert len(first) == 3 * (1 + CONFIG.augment_copies) and first == again
    assert [d.label for d in first[3:6]] == [d.label for d in docs]


def test_review_threshold_search() -> None:
    from docflow_training.train import review_threshold_for

    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    got = review_threshold_for(["a", "a", "b", "a"], probabilities, ["a", "b"], target_precision=0.95, confidence=0.5)
    assert got["threshold"] == pytest.approx(0.61) and got["coverage"] == 0.5 and got["precision"] == 1.0
    # two right answers are no evidence of 95 % precision: at 90 % confidence no threshold reaches it
    strict = review_threshold_for(["a", "a", "b", "a"], probabilities, ["a", "b"], target_precision=0.95)
    assert not strict["reached"] and strict["precision_lower_bound"] < 0.95


def test_review_threshold_without_held_out_documents_sends_everything_to_review() -> None:
    from docflow_training.train import review_threshold_for

    got = review_threshold_for([], np.zeros((0, 2)), ["a", "b"])
    assert got["threshold"] == 1.0 and not got["reached"] and got["coverage"] == 0.0


def test_review_threshold_holds_the_target_at_the_confidence() -> None:
    from docflow_training.train import review_threshold_for

    # 1000 documents, confidence from 0.50 to 0.999; below 0.7 every 9th is wrong (45 in all, 95.5 %),
    # above it all are right: the sample's precision reaches 95 % with nothing sent to review, but that
    # is too close to call from 1000 documents, so at 90 % confidence a higher threshold is needed.
    top = np.linspace(0.5, 0.999, 1000)
    probabilities = np.column_stack([top, 1 - top])
    truth = ["b" if i % 9 == 0 and top[i] < 0.7 else "a" for i in range(1000)]
    point = review_threshold_for(truth, probabilities, ["a", "b"], confidence=0.5)
    bound = review_threshold_for(truth, probabilities, ["a", "b"], confidence=0.9)
    assert point["threshold"] == 0.0 and point["precision"] >= 0.95
    assert bound["reached"] and bound["precision_lower_bound"] >= 0.95 and bound["threshold"] > 0.0
    assert bound["coverage"] < point["coverage"]


def test_precision_lower_bound_is_the_wilson_interval() -> None:
    from scipy.stats import binomtest

    from docflow_training.train import precision_lower_bound

    for correct, total in ((95, 100), (480, 500), (10, 10), (0, 5)):
        # one-sided 90 % = the lower end of the two-sided 80 % interval
        expected = binomtest(correct, total).proportion_ci(confidence_level=0.8, method="wilson").low
        assert precision_lower_bound(correct, total, 0.9) == pytest.approx(expected, abs=1e-9)
    assert precision_lower_bound(95, 100, 0.5) == pytest.approx(0.95)
    assert precision_lower_bound(0, 0, 0.9) == 0.0
    assert precision_lower_bound(960, 1000, 0.9) > precision_lower_bound(96, 100, 0.9)


def test_served_review_threshold_is_the_stricter_calibration() -> None:
    from docflow_training.train import served_review_threshold

    clean, noised = {"threshold": 0.75, "reached": True}, {"threshold": 0.65, "reached": True}
    assert served_review_threshold(clean, noised)["threshold"] == 0.75
    assert served_review_threshold(noised, clean)["threshold"] == 0.75
    assert served_review_threshold(clean, noised)["reached"]
    assert not served_review_threshold(clean, {**noised, "reached": False})["reached"]


def test_bpe_features_still_train_and_serve(tmp_path: Path) -> None:
    result = run_training(CORPUS, tmp_path / "bpe", BPE_CONFIG)
    served = TextClassifier(result.model_dir)
    assert served.config.char_ngram_range is None
    assert served.predict(OBVIOUS["email"]).predicted_class == "email"
    assert result.metrics["onnx_max_abs_diff"] < 1e-5


def test_training_warns_when_the_held_out_split_cannot_support_the_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 7 held-out documents: even all right, 95 % precision cannot be claimed at 90 % confidence
    # (the Wilson bound of 7/7 is 0.81), so the model is served strict and training says why.
    with caplog.at_level(logging.WARNING, logger="docflow_training.train"):
        strict = run_training(CORPUS, tmp_path / "strict", CONFIG)
    assert not strict.metrics["review_threshold"]["reached"]
    assert "held-out documents" in caplog.text and "most documents will go to review" in caplog.text
    caplog.clear()
    lenient = CONFIG.model_copy(update={"review_confidence": 0.5})
    with caplog.at_level(logging.WARNING, logger="docflow_training.train"):
        point = run_training(CORPUS, tmp_path / "point", lenient)
    # the sample's own precision does reach it: no warning, a lower threshold
    assert point.metrics["review_threshold"]["reached"]
    assert "most documents will go to review" not in caplog.text
    assert point.metrics["review_threshold"]["threshold"] < strict.metrics["review_threshold"]["threshold"]


def test_a_two_class_corpus_exports_the_same_probabilities_as_sklearn(tmp_path: Path) -> None:
    """scikit-learn keeps one weight row for two classes; the graph still gives a probability per class."""
    two = tmp_path / "two"
    for folder in ("Email", "Resume"):
        shutil.copytree(CORPUS / folder, two / folder)
    result = run_training(two, tmp_path / "model", CONFIG)
    classifier = TextClassifier(result.model_dir)
    assert classifier.labels == ("email", "resume")
    texts = [doc.text for doc in result.holdout_docs + result.train_docs] + [OBVIOUS["email"], OBVIOUS["resume"]]
    np.testing.assert_allclose(classifier.predict_proba(texts), result.fitted.predict_proba(texts), atol=1e-5)
    assert classifier.predict(OBVIOUS["resume"]).predicted_class == "resume"
