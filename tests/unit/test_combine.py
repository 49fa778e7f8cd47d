"""`docflow model combine`: two tiny models of the fixture corpus made into one combined model directory, which
the runtime serves as the weighted geometric pooling of its members' probabilities."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from docflow.cli import app
from docflow.domain.classifier import TextClassifier
from docflow.domain.drift import load_baseline
from docflow.domain.layout import FEATURE_NAMES, LAYOUT_VERSION
from docflow.domain.model_files import (
    BASELINE_FILE,
    CONFIG_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PARTNER_CONFIG_FILE,
    PARTNER_FILES,
    PARTNER_MODEL_FILE,
    PARTNER_TOKENIZER_FILE,
    SCAN_HEAD_FILE,
    TOKENIZER_FILE,
)
from docflow_training import train
from docflow_training.combine import CombineError, combine_model_dirs, combined_version
from docflow_training.data import load_corpus, stratified_split
from docflow_training.registry import text_sha256
from docflow_training.scan_head import ScanHeadConfig, fit_scan_head
from docflow_training.scans import Scan, scan_set
from docflow_training.train import TrainConfig, train_model

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
TEXTS = [
    "From: kim@example.com To: lee@example.com Subject: Re: the meeting. Please reply by Friday.",
    "Curriculum vitae. Education: BSc chemistry. Experience: research assistant, 2019-2023.",
    "The council voted on Tuesday to close the bridge for repairs, officials said.",
    "",
    "budget figures for the third quarter",
]
HEAD_CONFIG = ScanHeadConfig(folds=3, repeats=1, threshold_repeats=1)


def pooled(primary: np.ndarray, partner: np.ndarray, weight: float) -> np.ndarray:
    """The contract, written out independently of the runtime: p ∝ exp((1-w)·log p1 + w·log p2), logs of
    probabilities clipped at 1e-9."""
    log = (1 - weight) * np.log(np.clip(primary.astype(np.float64), 1e-9, None)) + weight * np.log(
        np.clip(partner.astype(np.float64), 1e-9, None)
    )
    exp = np.exp(log - log.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def partner_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny linear model (BPE word pieces instead of character n-grams) with the tiny_model's split of
    the fixture corpus (seed 7, a quarter held out)."""
    out = tmp_path_factory.mktemp("partner") / "bpe"
    config = TrainConfig(seed=7, features="bpe", vocab_size=400, c_grid=(10.0,), cv_folds=3, holdout_fraction=0.25)
    train_model(CORPUS, out, config)
    return out


@pytest.fixture(scope="module")
def combined(tiny_model: Path, partner_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("combined") / "model"
    combine_model_dirs(tiny_model, partner_model, 0.3, out, holdout=CORPUS)
    return out


def _copy_with_labels(model_dir: Path, labels: list[str], target: Path) -> Path:
    shutil.copytree(model_dir, target)
    (target / LABELS_FILE).write_text(json.dumps(labels))
    return target


def test_the_combined_directory_serves_the_pooled_probabilities(
    tiny_model: Path, partner_model: Path, combined: Path
) -> None:
    served = TextClassifier(combined)
    first, second = TextClassifier(tiny_model), TextClassifier(partner_model)
    assert served.labels == first.labels == second.labels
    expected = pooled(first.predict_proba(TEXTS), second.predict_proba(TEXTS), 0.3)
    probabilities = served.predict_proba(TEXTS)
    assert probabilities.shape == (len(TEXTS), len(served.labels))
    assert np.allclose(probabilities, expected, atol=1e-6)
    # Not one of the members: the pooling moved the probabilities.
    assert not np.allclose(probabilities, first.predict_proba(TEXTS), atol=1e-3)
    prediction = served.predict(TEXTS[0])
    assert prediction.model_version == served.version and prediction.predicted_class == "email"


def test_the_combined_directory_holds_both_members_and_its_own_config(
    tiny_model: Path, partner_model: Path, combined: Path
) -> None:
    names = {p.name for p in combined.iterdir()}
    assert names == {MODEL_FILE, TOKENIZER_FILE, LABELS_FILE, CONFIG_FILE, METRICS_FILE, BASELINE_FILE, *PARTNER_FILES}
    assert SCAN_HEAD_FILE not in names  # a head is fitted on the combination's probabilities (--scans), not copied
    # Staging is gone: only the model directory is left beside it.
    assert [p.name for p in combined.parent.iterdir()] == [combined.name]
    for ours, theirs, member in (
        (MODEL_FILE, MODEL_FILE, tiny_model),
        (TOKENIZER_FILE, TOKENIZER_FILE, tiny_model),
        (LABELS_FILE, LABELS_FILE, tiny_model),
        (PARTNER_MODEL_FILE, MODEL_FILE, partner_model),
        (PARTNER_TOKENIZER_FILE, TOKENIZER_FILE, partner_model),
        (PARTNER_CONFIG_FILE, CONFIG_FILE, partner_model),  # the partner's own config, unchanged
    ):
        assert (combined / ours).read_bytes() == (member / theirs).read_bytes(), ours

    primary = json.loads((tiny_model / CONFIG_FILE).read_text())
    partner = json.loads((partner_model / CONFIG_FILE).read_text())
    config = json.loads((combined / CONFIG_FILE).read_text())
    assert config["partner_weight"] == 0.3
    assert config["architecture"] == f"combined: {primary['architecture']} + {partner['architecture']}"
    assert config["version"] == combined_version(primary["version"], partner["version"], 0.3)
    assert config["version"] not in (primary["version"], partner["version"])
    assert config["created_at"] and config["name"] == primary["name"]
    assert config["char_ngram_range"] == primary["char_ngram_range"]  # the primary's graph reads the text
    assert config["combined"] == {
        "primary": {"name": primary["name"], "version": primary["version"], "family": "linear"},
        "partner": {"name": partner["name"], "version": partner["version"], "family": "linear"},
        "weight": 0.3,
    }


def test_the_combination_is_scored_and_calibrated_on_the_split_its_members_held_out(combined: Path) -> None:
    _, held_out = stratified_split(load_corpus(CORPUS), 0.25, 7)
    metrics = json.loads((combined / METRICS_FILE).read_text())
    config = json.loads((combined / CONFIG_FILE).read_text())
    assert metrics["n_holdout"] == len(held_out) and metrics["holdout"]["seed"] == 7
    assert "seed 7" in metrics["holdout"]["source"]
    served = TextClassifier(combined)
    probabilities = served.predict_proba([doc.text for doc in held_out])
    y_pred = [served.labels[i] for i in np.argmax(probabilities, axis=1)]
    accuracy = np.mean([p == doc.label for p, doc in zip(y_pred, held_out, strict=True)])
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert set(metrics["per_class"]) == set(served.labels) and 0.0 <= metrics["macro_f1"] <= 1.0
    assert set(metrics["members_on_holdout"]) == {"primary", "partner"}
    assert metrics["pooling_max_abs_diff"] < 1e-5
    # The review threshold served is the one calibrated on the combination's own held-out probabilities.
    assert config["review_threshold"] == metrics["review_threshold"]["threshold"] == served.review_threshold()
    assert {"holdout", "holdout_ocr_noise", "rule"} <= set(metrics["review_threshold"])
    baseline = load_baseline(combined)
    assert baseline is not None and baseline.n_predictions == len(held_out)
    assert baseline.model_version == config["version"] == metrics["model_version"]


def test_without_a_holdout_the_stricter_members_threshold_serves(
    tiny_model: Path, partner_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "combined"
    metrics = combine_model_dirs(tiny_model, partner_model, 0.5, out)
    thresholds = [TextClassifier(d).config.review_threshold for d in (tiny_model, partner_model)]
    served = TextClassifier(out)
    assert served.config.review_threshold == max(t for t in thresholds if t is not None)
    assert metrics["holdout"] is None and "accuracy" not in metrics
    assert not (out / BASELINE_FILE).exists()


@pytest.mark.parametrize("weight", [0.0, 1.0, -0.2, 1.5, math.nan, math.inf])
def test_a_weight_outside_the_open_unit_interval_is_refused(
    weight: float, tiny_model: Path, partner_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(CombineError, match="strictly between 0 and 1"):
        combine_model_dirs(tiny_model, partner_model, weight, tmp_path / "out")
    assert not list(tmp_path.iterdir())


def test_labels_in_another_order_or_other_classes_are_refused(
    tiny_model: Path, partner_model: Path, tmp_path: Path
) -> None:
    labels = json.loads((partner_model / LABELS_FILE).read_text())
    reordered = _copy_with_labels(partner_model, list(reversed(labels)), tmp_path / "reordered")
    with pytest.raises(CombineError, match="same classes in another order"):
        combine_model_dirs(tiny_model, reordered, 0.5, tmp_path / "out")
    other = _copy_with_labels(partner_model, [*labels[:-1], "memo"], tmp_path / "other")
    with pytest.raises(CombineError, match=r"classes differ: only .* has resume; only .* has memo"):
        combine_model_dirs(tiny_model, other, 0.5, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_combined_or_overlapping_directories_are_refused(
    tiny_model: Path, partner_model: Path, combined: Path, tmp_path: Path
) -> None:
    with pytest.raises(CombineError, match="No such partner model directory"):
        combine_model_dirs(tiny_model, tmp_path / "nowhere", 0.5, tmp_path / "out")
    with pytest.raises(CombineError, match="already a combined model"):
        combine_model_dirs(combined, partner_model, 0.5, tmp_path / "out")
    with pytest.raises(CombineError, match="one of the models being combined"):
        combine_model_dirs(tiny_model, partner_model, 0.5, partner_model)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model directory"):
        combine_model_dirs(tiny_model, partner_model, 0.5, tmp_path / "docs")
    assert [p.name for p in (tmp_path / "docs").iterdir()] == ["notes.txt"]


def test_a_corpus_split_differently_by_the_members_is_refused_and_an_unseen_one_used_whole(
    tiny_model: Path, tmp_path: Path
) -> None:
    other_split = tmp_path / "seed3"
    train_model(CORPUS, other_split, TrainConfig(seed=3, vocab_size=400, c_grid=(10.0,), holdout_fraction=0.25))
    with pytest.raises(CombineError, match="different held-out splits"):
        combine_model_dirs(tiny_model, other_split, 0.5, tmp_path / "out", holdout=CORPUS)
    # Another folder holding the corpus and one new document: what the members trained on there is left out
    unseen = tmp_path / "unseen"
    shutil.copytree(CORPUS, unseen)
    (unseen / "Email" / "email_99.txt").write_text("From: a@example.com To: b@example.com Subject: lunch")
    metrics = combine_model_dirs(tiny_model, other_split, 0.5, tmp_path / "out", holdout=unseen)
    trained = {text_sha256(d.text) for seed in (7, 3) for d in stratified_split(load_corpus(CORPUS), 0.25, seed)[0]}
    expected = [d for d in load_corpus(unseen) if not d.text.strip() or text_sha256(d.text) not in trained]
    assert metrics["n_holdout"] == len(expected) < len(load_corpus(unseen))
    assert any(d.path.endswith("email_99.txt") for d in expected)
    assert "a member trained on elsewhere left out" in metrics["holdout"]["source"]


def test_a_holdout_whose_overlap_with_a_member_cannot_be_checked_is_refused(
    tiny_model: Path, partner_model: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(tiny_model, moved)
    config = json.loads((moved / "config.json").read_text())
    config["training_data"]["path"] = str(tmp_path / "gone")  # trained on a corpus that is not here
    (moved / "config.json").write_text(json.dumps(config))
    other = tmp_path / "other"
    shutil.copytree(CORPUS, other)
    (other / "Email" / "email_99.txt").write_text("From: a@example.com To: b@example.com Subject: lunch")
    with pytest.raises(CombineError, match="cannot be checked"):
        combine_model_dirs(moved, partner_model, 0.5, tmp_path / "out", holdout=other)


def test_a_new_combination_replaces_an_earlier_one(tiny_model: Path, partner_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "combined"
    combine_model_dirs(tiny_model, partner_model, 0.5, out)
    first = TextClassifier(out).version
    combine_model_dirs(tiny_model, partner_model, 0.2, out)
    served = TextClassifier(out)
    assert served.version != first and served.config.partner_weight == 0.2
    assert [p.name for p in tmp_path.iterdir()] == ["combined"]


# -- the command ----------------------------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["model", "combine", *args])


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_the_command_writes_a_combined_model(tiny_model: Path, partner_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "combined"
    result = invoke(str(tiny_model), str(partner_model), "--out", str(out), "--weight", "0.4", "--holdout", str(CORPUS))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    served = TextClassifier(out)
    assert summary["version"] == served.version and summary["weight"] == 0.4 == served.config.partner_weight
    assert summary["n_holdout"] == json.loads((out / METRICS_FILE).read_text())["n_holdout"]
    assert set(summary["members_on_holdout"]) == {"primary", "partner"}
    assert f"Combined model written to {out}" in result.stderr


def test_the_command_refuses_in_one_line(tiny_model: Path, partner_model: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    result = invoke(str(tiny_model), str(partner_model), "--out", out, "--weight", "1")
    assert result.exit_code == 2
    assert one_error_line(result.output) == "--weight 1: the partner's weight must be strictly between 0 and 1"
    result = invoke(str(tiny_model), str(tmp_path / "nowhere"), "--out", out)
    assert result.exit_code == 2
    assert one_error_line(result.output) == f"No such partner model folder: {tmp_path / 'nowhere'}"
    labels = json.loads((partner_model / LABELS_FILE).read_text())
    reordered = _copy_with_labels(partner_model, list(reversed(labels)), tmp_path / "reordered")
    result = invoke(str(tiny_model), str(reordered), "--out", out)
    assert result.exit_code == 2
    assert "same classes in another order" in one_error_line(result.output)
    # Refused before any scan is read.
    (tmp_path / "scans").mkdir()
    result = invoke(str(tiny_model), str(reordered), "--out", out, "--scans", str(tmp_path / "scans"))
    assert result.exit_code == 2 and "same classes in another order" in one_error_line(result.output)
    assert not (tmp_path / "out").exists()


def _synthetic_scans() -> list[Scan]:
    """The fixture corpus as if scanned (its texts, random page layouts), and pages of no class of the models'
    (budgets) whose layout gives them away: what the scan head is fitted on, without OCR."""
    rng = np.random.default_rng(0)
    scans = []
    docs = load_corpus(CORPUS)
    budgets = [(f"budget/{i}.png", "budget", f"Budget {i}: totals for the quarter {i * 17}") for i in range(10)]
    for path, label, text in [(doc.path, doc.label, doc.text) for doc in docs] + budgets:
        layout = {name: float(rng.normal()) for name in FEATURE_NAMES}
        if label == "budget":
            layout[FEATURE_NAMES[1]] += 3.0
        sha256 = hashlib.sha256(path.encode()).hexdigest()
        scans.append(Scan(path, label, sha256, text, layout, LAYOUT_VERSION))
    return scans


def test_the_command_fits_the_scan_head_on_the_combinations_probabilities(
    tiny_model: Path, partner_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = _synthetic_scans()
    monkeypatch.setattr("docflow_training.scans.read_scans", lambda *a, **k: scans)
    # The head's cross-validation, cut to one shuffle of three folds (ten shuffles of five take minutes here).
    monkeypatch.setattr(train, "fit_scan_head", partial(fit_scan_head, config=HEAD_CONFIG))
    (tmp_path / "scans").mkdir()
    out = tmp_path / "combined"
    result = invoke(str(tiny_model), str(partner_model), "--out", str(out), "--scans", str(tmp_path / "scans"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    served = TextClassifier(out)
    assert served.scan_head is not None and (out / SCAN_HEAD_FILE).is_file()
    # The head the command fitted is the one fitted on the combined model's probabilities of these scans.
    probabilities = served.predict_proba([s.text for s in scans])
    expected = fit_scan_head(scan_set(scans, probabilities), list(served.labels), HEAD_CONFIG)
    assert served.scan_head.spec.review_threshold == pytest.approx(expected.spec.review_threshold)
    reported = summary["real_scans_cross_validated"]
    assert reported["top1"] == pytest.approx(expected.report["top1"])
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["real_scans"]["fitted_on"]["scans"] == len(scans)
    assert "predictions" not in reported
