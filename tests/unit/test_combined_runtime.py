"""A combined model directory (config.json's partner_weight) at run time: its two graphs' probabilities are
pooled as a weighted geometric mean; its partner's files are required and part of its fingerprint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from docflow.domain.classifier import ModelNotFoundError, TextClassifier, model_fingerprint
from docflow.domain.encoding import pool_partner
from docflow.domain.model_files import (
    CONFIG_FILE,
    MODEL_FILE,
    MODEL_FILES,
    PARTNER_CONFIG_FILE,
    PARTNER_FILES,
    PARTNER_MODEL_FILE,
    PARTNER_TOKENIZER_FILE,
    TOKENIZER_FILE,
)
from docflow.settings import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.unit

TEXTS = ["MEMORANDUM TO: all staff FROM: J. Smith RE: budget", "Dear Sir, I write to apply for the post", ""]


def test_pooling_is_the_normalized_weighted_geometric_mean() -> None:
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    b = np.array([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    pooled = pool_partner(a, b, 0.25)
    expected = a**0.75 * b**0.25
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(pooled, expected, atol=1e-6)
    assert np.allclose(pooled.sum(axis=1), 1.0, atol=1e-6)
    assert np.allclose(pool_partner(a, np.zeros_like(a), 0.5).sum(axis=1), 1.0)  # a zero never makes a NaN


def _combined(tmp_path: Path, primary: Path, partner: Path, weight: float) -> Path:
    out = tmp_path / "combined"
    out.mkdir()
    for name in MODEL_FILES:
        if (primary / name).is_file() and name not in PARTNER_FILES:
            shutil.copy(primary / name, out / name)
    for ours, theirs in ((PARTNER_MODEL_FILE, MODEL_FILE), (PARTNER_TOKENIZER_FILE, TOKENIZER_FILE)):
        shutil.copy(partner / theirs, out / ours)
    shutil.copy(partner / CONFIG_FILE, out / PARTNER_CONFIG_FILE)
    config = json.loads((primary / CONFIG_FILE).read_text())
    (out / CONFIG_FILE).write_text(json.dumps({**config, "version": "combined-test", "partner_weight": weight}))
    (out / "scan_head.json").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def other_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the tiny model's classes (another vocabulary and C): its probabilities differ."""
    from docflow_training.train import TrainConfig, train_model

    out = tmp_path_factory.mktemp("other") / "model"
    config = TrainConfig(seed=3, vocab_size=200, c_grid=(0.3,), cv_folds=3, holdout_fraction=0.25)
    train_model(Path(__file__).resolve().parents[1] / "fixtures" / "corpus", out, config)
    return out


def test_a_combined_model_serves_its_two_graphs_pooled(
    tmp_path: Path, tiny_model: Path, other_tiny_model: Path
) -> None:
    primary, partner = TextClassifier(tiny_model), TextClassifier(other_tiny_model)
    assert primary.labels == partner.labels
    combined = TextClassifier(_combined(tmp_path, tiny_model, other_tiny_model, 0.3))
    assert combined.partner is not None and combined.version == "combined-test"
    p, q = primary.predict_proba(TEXTS), partner.predict_proba(TEXTS)
    assert not np.allclose(p, q, atol=1e-3)  # two different models, or the test proves nothing
    assert np.allclose(combined.predict_proba(TEXTS), pool_partner(p, q, 0.3), atol=1e-6)
    assert not np.allclose(combined.predict_proba(TEXTS), p, atol=1e-3)
    assert combined.predict(TEXTS[0]).model_version == "combined-test"


def test_a_combined_model_without_its_partner_files_says_which_are_missing(tmp_path: Path) -> None:
    out = _combined(tmp_path, DEFAULT_MODEL_DIR, DEFAULT_MODEL_DIR, 0.5)
    (out / PARTNER_TOKENIZER_FILE).unlink()
    with pytest.raises(ModelNotFoundError, match=PARTNER_TOKENIZER_FILE):
        TextClassifier(out)


def test_a_partner_whose_classes_differ_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    out = _combined(tmp_path, DEFAULT_MODEL_DIR, tiny_model, 0.5)  # the tiny model knows 3 classes, not 10
    with pytest.raises(ValueError, match="outputs 3 classes"):
        TextClassifier(out)


def test_replacing_the_partner_is_another_model(tmp_path: Path) -> None:
    out = _combined(tmp_path, DEFAULT_MODEL_DIR, DEFAULT_MODEL_DIR, 0.5)
    before = model_fingerprint(out)
    data = (out / PARTNER_MODEL_FILE).read_bytes()
    (out / PARTNER_MODEL_FILE).unlink()
    (out / PARTNER_MODEL_FILE).write_bytes(data)
    assert model_fingerprint(out) != before
