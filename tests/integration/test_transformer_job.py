"""The transformer family through the training job as a user runs it: `docflow train --family transformer`
(the job as a local process → MLflow run with per-epoch curves → registry version → gate → published
champion served by Classify), and `--no-track` writing a model directory. Tiny settings: seconds on a CPU."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from docflow.cli import app
from docflow.domain.classifier import TextClassifier
from docflow.settings import Settings
from docflow_training import checkpoints
from docflow_training.entry import STATE_FILE, JobPaths, job_config, run_job
from docflow_training.launch import run_local_job
from docflow_training.registry import Registry
from docflow_training.tracking import resolve_tracking

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("torch", reason="the training extra (PyTorch) is not installed")

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
TINY = {
    "family": "transformer",
    "seed": 3,
    "epochs": 2,
    "max_train_docs": 9,
    "batch_size": 3,
    "max_length": 32,
    "max_chunks": 2,
    "holdout_fraction": 0.25,
    "min_eval_docs": 1,
}


def test_a_tracked_transformer_run_logs_its_epochs_and_serves_as_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "DOCFLOW_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    home = tmp_path / "home"
    lines: list[str] = []
    result = run_local_job(CORPUS, Settings(home=home), hyperparameters=TINY, include_feedback=False, echo=lines.append)
    assert result.version == 1 and result.promoted, "".join(lines)[-3000:]
    registry = Registry(resolve_tracking(home))
    run = registry.client.get_run(result.run_id)
    assert run.data.params["family"] == "transformer"
    assert run.data.params["transformer.epochs"] == "2" and run.data.params["transformer.max_train_docs"] == "9"
    assert run.data.params["device.fit"] in ("cpu", "cuda")
    # One point per epoch: the run page draws the training curve.
    history = registry.client.get_metric_history(result.run_id, "epoch_train_loss")
    assert [point.step for point in history] == [1, 2]
    assert all(point.value > 0 for point in history)
    assert len(registry.client.get_metric_history(result.run_id, "epoch_holdout_accuracy")) == 2
    # The champion is published where Classify finds it, and it is the transformer.
    pointer = json.loads((home / "models" / "champion.json").read_text())
    served = TextClassifier(home / "models" / pointer["model_dir"])
    assert served.config.family == "transformer"
    assert served.version == "1"
    prediction = served.predict("From: kim@example.com To: lee@example.com Subject: Re: meeting, please reply")
    assert prediction.predicted_class in ("email", "news_article", "resume")
    assert "epoch 1:" in "".join(lines) and "epoch 2:" in "".join(lines)


def test_train_no_track_writes_a_transformer_model_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="docflow_training.transformer")
    out = tmp_path / "model"
    hp = [f"--hp={k}={v}" for k, v in TINY.items() if k not in ("family", "seed", "min_eval_docs")]
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--no-track",
            "--family",
            "transformer",
            "--data",
            str(CORPUS),
            "--out",
            str(out),
            "--seed",
            "3",
            *hp,
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["family"] == "transformer" and config["max_chunks"] == 2
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]
    assert 0.0 <= metrics["int8_top1_agreement"] <= 1.0
    assert "epoch 2:" in result.output
    assert "epoch 1/2: 1/3 batches, train loss so far" in caplog.text  # how far a long epoch has come


def test_a_hyperparameter_of_the_other_family_is_refused_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--no-track", "--family", "transformer", "--data", str(CORPUS), "--hp", "c_grid=1,10"]
    )
    assert result.exit_code == 2
    assert "unknown hyperparameters for the transformer family ['c_grid']" in result.output


class _SpotInterruption(Exception):
    pass


def test_a_job_stopped_after_an_epoch_resumes_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """run_job as SageMaker runs it on spot: stopped just after epoch 1's checkpoint, started again with the same
    DOCFLOW_CHECKPOINT_DIR, it trains only epoch 2, and its MLflow run still has both epochs' curves."""
    caplog.set_level(logging.INFO, logger="docflow_training")
    env = {
        "SM_CHANNEL_TRAIN": str(CORPUS),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "DOCFLOW_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_EXPERIMENT_NAME": "resume",
        "CUDA_VISIBLE_DEVICES": "",
    }
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    paths = JobPaths.from_env(env)
    config = job_config(TINY)
    save = checkpoints.save_checkpoint

    def save_then_stop(*args: Any, **kwargs: Any) -> Path:
        save(*args, **kwargs)
        raise _SpotInterruption

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_stop)
    with pytest.raises(_SpotInterruption):
        run_job(config, paths, env)
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    epoch_dir = tmp_path / "checkpoints" / "transformer"
    assert (epoch_dir / checkpoints.CHECKPOINT_FILE).is_file()

    caplog.clear()
    result = run_job(config, paths, env)
    assert "resuming from epoch 1 checkpoint" in caplog.text
    assert "epoch 1:" not in caplog.text and "epoch 2:" in caplog.text  # entry's on_epoch: only epoch 2 trained
    assert not epoch_dir.exists()  # removed once the job's state says trained
    assert json.loads((tmp_path / "checkpoints" / STATE_FILE).read_text())["trained"] is True
    # The run page's curves are whole: epoch 1's row came back from the checkpoint, logged once.
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]
    registry = Registry(resolve_tracking(env=env))
    history = registry.client.get_metric_history(result["run_id"], "epoch_train_loss")
    assert [(point.step, point.value) for point in history] == [
        (r["epoch"], r["train_loss"]) for r in metrics["epochs"]
    ]
