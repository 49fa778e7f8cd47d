"""Train on the full Tobacco-3482 OCR corpus and check the served model against honest floors.

The corpus is read by path, never copied in: ``$DOCFLOW_DATA_DIR/tobacco3482`` (the shared data
root), by default ``<repo>/../shared/data/tobacco3482``. Measured with the default TrainConfig
(character n-grams 2-5, one OCR-noised copy of each training document; 20% held out, 696
documents), seed 0: accuracy 0.846 / macro-F1 0.825; the same held-out split through the OCR-noise
channel (noise.HEAVY) 0.828 / 0.806. (The previous BPE word model: 0.822 / 0.791, noised 0.734.)
The floors below sit a few points under those.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path

import pytest

from docflow.domain.classifier import TextClassifier
from docflow_training.train import TrainConfig, TrainingResult, run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("DOCFLOW_DATA_DIR") or REPO.parent / "shared" / "data")
CORPUS = DATA_ROOT / "tobacco3482"

ACCURACY_FLOOR = 0.80
MACRO_F1_FLOOR = 0.78
NOISED_ACCURACY_FLOOR = 0.78  # the word model scored 0.73 here: a floor it would fail
CLASSES = {
    "advertisement",
    "email",
    "form",
    "letter",
    "memo",
    "news_article",
    "note",
    "resume",
    "scientific_publication",
    "scientific_report",
}

if not CORPUS.is_dir():
    pytest.skip(
        f"Tobacco-3482 corpus not found at {CORPUS}: set DOCFLOW_DATA_DIR to the shared data root",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    return run_training(CORPUS, tmp_path_factory.mktemp("corpus_model") / "model", TrainConfig(seed=0))


def test_held_out_quality_clears_the_floor(trained: TrainingResult) -> None:
    metrics = trained.metrics
    assert metrics["n_train"] + metrics["n_holdout"] == metrics["dataset"]["n_documents"] == 3481
    assert metrics["n_holdout"] == pytest.approx(0.2 * 3481, abs=10)
    assert set(metrics["per_class"]) == CLASSES
    assert metrics["accuracy"] >= ACCURACY_FLOOR, metrics["accuracy"]
    assert metrics["macro_f1"] >= MACRO_F1_FLOOR, metrics["macro_f1"]
    # The distinctive classes are near perfect; a class falling to chance means something broke.
    assert metrics["per_class"]["email"]["recall"] >= 0.9
    assert metrics["per_class"]["resume"]["recall"] >= 0.9
    assert all(c["recall"] >= 0.3 for c in metrics["per_class"].values()), metrics["per_class"]
    assert metrics["onnx_max_abs_diff"] < 1e-5
    # `make model` must stay within ~5 minutes on 2 cores: measured 208 s alone, 296 s sharing the
    # cores with a test run; the bound leaves room for a busy CI machine.
    assert metrics["training_seconds"] < 360


def test_ocr_noised_holdout_clears_the_floor(trained: TrainingResult) -> None:
    noised = trained.metrics["holdout_ocr_noise"]
    assert noised["accuracy"] >= NOISED_ACCURACY_FLOOR, noised["accuracy"]
    # A review threshold holding 95 % precision (at 90 % confidence) exists and leaves most noised
    # documents automatic (0.51 for the default model).
    review = noised["review_threshold"]
    assert review["reached"] and review["coverage"] >= 0.45, review
    # The served threshold reaches the target on the clean held-out split too, and is the stricter one.
    served = trained.metrics["review_threshold"]
    assert served["holdout"]["reached"], served
    assert served["threshold"] == max(served["holdout"]["threshold"], review["threshold"])
    assert json.loads((trained.model_dir / "config.json").read_text())["review_threshold"] == served["threshold"]


def test_metrics_file_matches_what_training_returned(trained: TrainingResult) -> None:
    assert json.loads((trained.model_dir / "metrics.json").read_text()) == trained.metrics


def test_near_empty_corpus_documents_are_classified(trained: TrainingResult) -> None:
    classifier = TextClassifier(trained.model_dir)
    near_empty = [doc.text for doc in trained.holdout_docs + trained.train_docs if len(doc.text.strip()) < 30]
    assert len(near_empty) >= 20  # the corpus README: about 50 such files
    for prediction in classifier.predict_batch(near_empty):
        assert prediction.predicted_class in CLASSES
        assert all(math.isfinite(p) for p in prediction.scores.values())
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_load_and_predict_latency(trained: TrainingResult) -> None:
    started = time.perf_counter()
    classifier = TextClassifier(trained.model_dir)
    load_seconds = time.perf_counter() - started
    texts = [doc.text for doc in trained.holdout_docs[:200]]
    classifier.predict(texts[0])  # first run allocates
    timings = []
    for text in texts:
        started = time.perf_counter()
        classifier.predict(text)
        timings.append(time.perf_counter() - started)
    # Generous bounds (shared CI machines): measured ~0.1 s load and ~1 ms p50 on 2 cores.
    assert load_seconds < 2.0
    assert statistics.median(timings) < 0.05
