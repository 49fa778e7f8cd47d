"""`docflow train --validation DIR` on real scans, end to end: pages rendered from the fixture corpus's texts
(and one of a class the corpus lacks, and a blank one) are OCR'd by Tesseract, written as the job's validation
channel, and the tracked job's promotion gate compares the challenger with the champion on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docflow.cli import app
from docflow.samples import render_page
from docflow_training.registry import Registry, write_holdout, write_train_manifest
from docflow_training.tracking import (
    HOLDOUT_FILE,
    TRAIN_MANIFEST_FILE,
    log_training_run,
    resolve_tracking,
)
from docflow_training.train import TrainConfig, run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("mlflow", reason="the training extra (MLflow) is not installed")

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
HP = {"seed": 7, "vocab_size": 400, "c_grid": (10.0,), "cv_folds": 3, "holdout_fraction": 0.25, "min_eval_docs": 1}


def _scans(root: Path) -> Path:
    """Two pages of each fixture class (its last two texts), a blank email page, an invoice page: a labels.csv."""
    rows = ["path,label"]
    for folder in sorted(CORPUS.iterdir()):
        for text in sorted(p for p in folder.glob("*.txt") if p.stat().st_size)[-2:]:
            render_page(text.read_text()).save(root / f"{text.stem}.png")
            rows.append(f"{text.stem}.png,{folder.name}")
    render_page("").save(root / "blank.png")
    render_page("INVOICE No. 4411\nAmount due: $1,250.00\nPayment terms: 30 days").save(root / "invoice.png")
    rows += ["blank.png,email", "invoice.png,invoice"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _register_champion(corpus: Path, home: Path, work: Path) -> None:
    """What the training job does for a first model, in this process: fit, record, register, promote."""
    config = TrainConfig(**{k: v for k, v in HP.items() if k != "min_eval_docs"})
    result = run_training(corpus, work / "model", config)
    write_holdout(result.holdout_docs, work / "gate" / HOLDOUT_FILE)
    write_train_manifest(result.train_docs, work / "gate" / TRAIN_MANIFEST_FILE)
    (work / "plots").mkdir()
    tracking = resolve_tracking(home)
    logged = log_training_run(
        tracking, model_dir=work / "model", gate_dir=work / "gate", params={}, plots_dir=work / "plots"
    )
    assert logged.version == 1
    Registry(tracking).make_champion(1)


def test_the_gate_scores_the_challenger_and_champion_on_the_real_scans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("DOCFLOW_HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # A champion trained on the corpus, its blank document included (a blank scan is still counted by the gate:
    # see registry.compare_on_holdout), registered here, in this process: a second training job would double
    # the test's time
    champion_corpus = CORPUS
    _register_champion(champion_corpus, home, tmp_path / "champion")

    (tmp_path / "scans").mkdir()
    scans = _scans(tmp_path / "scans")
    hp = [f"--hp={name}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for name, v in HP.items()]
    args = ["train", "--data", str(champion_corpus), "--validation", str(scans), "--no-feedback", "--workers", "2"]
    result = CliRunner().invoke(app, [*args, *hp])
    assert result.exit_code == 0, result.output
    assert "--validation: 1 of 8 scans left out, of 1 classes the training data lacks (invoice 1)" in result.output
    assert "--validation: gating on 7 real scans in 3 classes (1 with no text, kept)" in result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])

    registry = Registry(resolve_tracking(home))
    version = registry.version(int(summary["version"]))
    # Both models were scored on the 7 scans of the corpus's classes, the blank one included
    assert version.tags["gate.eval_docs"] == "7" and version.tags["gate.excluded_docs"] == "0"
    assert version.tags["gate.decision"] in ("promoted", "refused")
    params = registry.client.get_run(summary["run_id"]).data.params
    assert params["holdout.n_documents"] == "7"
    assert params["holdout.source"].startswith(f"real scans (7 of 8 in {scans}, the training data's classes; OCR'd by")
    assert "tesserocr" in params["holdout.source"]
