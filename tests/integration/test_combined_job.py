"""The combined family through the training job (#17): the linear model and the transformer trained on one split
and shipped as one combined model directory, which the job treats as any challenger (MLflow run with both
configs, the weight and the transformer's epoch curve, registry version, gate, published champion); and
``partner_dir``, which combines a transformer trained earlier instead of training one. Tiny settings: seconds."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from docflow.domain.classifier import TextClassifier
from docflow.domain.model_files import CONFIG_FILE, PARTNER_CONFIG_FILE, PARTNER_FILES
from docflow.settings import Settings
from docflow_training import checkpoints
from docflow_training.combine import CombineError
from docflow_training.entry import JobPaths, job_config, run_job
from docflow_training.families import TransformerConfig
from docflow_training.launch import run_local_job
from docflow_training.registry import Registry
from docflow_training.tracking import resolve_tracking

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("torch", reason="the training extra (PyTorch) is not installed")

from docflow_training import transformer as transformer_module  # noqa: E402  (torch: after the skip)

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SPLIT = {"seed": 3, "holdout_fraction": 0.25}
LINEAR = {"vocab_size": 400, "c_grid": "10", "min_eval_docs": 1}
TINY_TRANSFORMER = {"epochs": 2, "max_train_docs": 9, "batch_size": 3, "max_chunks": 2, "transformer.max_length": 32}
TEXT = "From: kim@example.com To: lee@example.com Subject: Re: meeting, please reply"


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "SM_CHANNEL_TRAIN": str(CORPUS),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "DOCFLOW_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_EXPERIMENT_NAME": "combined",
        "CUDA_VISIBLE_DEVICES": "",
    }


def test_a_combined_job_registers_gates_and_publishes_one_combined_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "DOCFLOW_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    home = tmp_path / "home"
    lines: list[str] = []
    hp = {"family": "combined", **SPLIT, **LINEAR, **TINY_TRANSFORMER, "partner_weight": 0.4}
    result = run_local_job(CORPUS, Settings(home=home), hyperparameters=hp, include_feedback=False, echo=lines.append)
    log = "".join(lines)
    assert result.version == 1 and result.run_id is not None, log[-3000:]
    # The gate decided on the combined version: the first version, no champion to beat.
    assert result.decision is not None and result.decision["version"] == 1 and result.promoted, log[-3000:]
    assert "epoch 1:" in log and "epoch 2:" in log  # the transformer was trained here

    registry = Registry(resolve_tracking(home))
    registered = registry.download_model_dir(1, tmp_path / "registered")
    config = json.loads((registered / CONFIG_FILE).read_text())
    assert config["partner_weight"] == 0.4
    assert all((registered / name).is_file() for name in PARTNER_FILES)
    partner = json.loads((registered / PARTNER_CONFIG_FILE).read_text())
    assert partner["family"] == "transformer" and partner["max_length"] == 32
    served = TextClassifier(registered)
    assert served.config.partner_weight == 0.4 and served.config.family == "linear"  # the primary is linear
    assert served.predict(TEXT).predicted_class in ("email", "news_article", "resume")
    metrics = json.loads((registered / "metrics.json").read_text())
    assert metrics["combined"]["weight"] == 0.4 and set(metrics["members"]) == {"linear", "transformer"}

    run = registry.client.get_run(result.run_id)
    params, logged = run.data.params, run.data.metrics
    assert params["family"] == "combined" and params["combined.partner_weight"] == "0.4"
    assert params["train.vocab_size"] == "400" and params["train.seed"] == "3"
    assert params["transformer.epochs"] == "2" and params["transformer.max_length"] == "32"
    assert params["transformer.seed"] == "3" and params["device.fit"] == "cpu"
    # The headline is the combination's held-out score; its members' are beside it.
    assert logged["holdout_accuracy"] == pytest.approx(metrics["accuracy"])
    assert logged["holdout_accuracy"] == pytest.approx(result.metrics["accuracy"])
    members = metrics["members_on_holdout"]
    assert logged["linear_holdout_accuracy"] == pytest.approx(members["primary"]["accuracy"])
    assert logged["transformer_holdout_macro_f1"] == pytest.approx(members["partner"]["macro_f1"])
    # The transformer's epoch curve, one point per epoch.
    history = registry.client.get_metric_history(result.run_id, "epoch_train_loss")
    assert [point.step for point in history] == [1, 2]

    # The champion published where Classify finds it is the combined model.
    pointer = json.loads((home / "models" / "champion.json").read_text())
    champion = TextClassifier(home / "models" / pointer["model_dir"])
    assert champion.config.partner_weight == 0.4 and champion.version == "1"


@pytest.fixture(scope="module")
def partner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny transformer trained earlier on the fixture corpus, with the split of SPLIT (one epoch)."""
    out = tmp_path_factory.mktemp("partner") / "transformer"
    config = TransformerConfig(**SPLIT, epochs=1, max_train_docs=9, batch_size=3, max_length=32, max_chunks=2)
    transformer_module.run_transformer_training(CORPUS, out, config)
    return out


def _no_transformer_training(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("partner_dir: no transformer is trained")


def test_partner_dir_combines_a_transformer_trained_earlier(
    partner: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setattr(transformer_module, "run_transformer_training", _no_transformer_training)
    env = _env(tmp_path)
    config = job_config({"family": "combined", **SPLIT, **LINEAR, "partner_dir": str(partner)})
    result = run_job(config, JobPaths.from_env(env), env)
    assert result["version"] == 1 and result["decision"]["version"] == 1

    model = tmp_path / "model"  # the job's model directory (SM_MODEL_DIR)
    assert (model / PARTNER_CONFIG_FILE).read_bytes() == (partner / CONFIG_FILE).read_bytes()
    assert (model / "partner_model.onnx").read_bytes() == (partner / "model.onnx").read_bytes()
    served = TextClassifier(model)
    assert served.config.partner_weight == 0.5  # the default weight
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["members"]["transformer"]["source"] == f"partner_dir {partner.resolve()}"
    assert [row["epoch"] for row in metrics["epochs"]] == [1]  # the partner's own curve, from its metrics.json

    registry = Registry(resolve_tracking(env=env))
    params = registry.client.get_run(result["run_id"]).data.params
    assert params["combined.partner_dir"] == str(partner)
    assert params["transformer.epochs"] == "1"  # as the partner was trained, not the job's default (3)
    assert [p.step for p in registry.client.get_metric_history(result["run_id"], "epoch_train_loss")] == [1]


def test_a_partner_of_another_split_is_refused_before_training(
    partner: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("refused before the linear model is trained")

    monkeypatch.setattr("docflow_training.entry.run_training", no_training)
    env = _env(tmp_path)
    config = job_config({"family": "combined", "seed": 4, "holdout_fraction": 0.25, "partner_dir": str(partner)})
    with pytest.raises(CombineError, match=r"held out another split \(seed 3, holdout_fraction 0.25\)"):
        run_job(config, JobPaths.from_env(env), env)
    other_corpus = tmp_path / "corpus"
    for folder in CORPUS.iterdir():
        (other_corpus / folder.name).mkdir(parents=True)
        for doc in sorted(folder.glob("*.txt"))[:-1]:  # one document fewer in each class
            (other_corpus / folder.name / doc.name).write_bytes(doc.read_bytes())
    env["SM_CHANNEL_TRAIN"] = str(other_corpus)
    config = job_config({"family": "combined", **SPLIT, "partner_dir": str(partner)})
    with pytest.raises(CombineError, match="was trained on other documents"):
        run_job(config, JobPaths.from_env(env), env)


class _SpotInterruption(Exception):
    pass


def test_the_combined_jobs_transformer_resumes_from_its_epoch_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped on spot just after the transformer's epoch 1 checkpoint, the combined job started again trains
    only epoch 2 (its linear model, one unit, is fitted again), and the run has both epochs' curves."""
    caplog.set_level(logging.INFO, logger="docflow_training")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    env = _env(tmp_path)
    paths = JobPaths.from_env(env)
    config = job_config({"family": "combined", **SPLIT, **LINEAR, **TINY_TRANSFORMER, "register_version": False})
    save = checkpoints.save_checkpoint

    def save_then_stop(*args: Any, **kwargs: Any) -> Path:
        save(*args, **kwargs)
        raise _SpotInterruption

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_stop)
    with pytest.raises(_SpotInterruption):
        run_job(config, paths, env)
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    assert (tmp_path / "checkpoints" / "transformer" / checkpoints.CHECKPOINT_FILE).is_file()

    caplog.clear()
    result = run_job(config, paths, env)
    assert "resuming from epoch 1 checkpoint" in caplog.text
    assert "epoch 1:" not in caplog.text and "epoch 2:" in caplog.text
    assert not (tmp_path / "checkpoints" / "transformer").exists()
    assert TextClassifier(tmp_path / "model").config.partner_weight == 0.5
    registry = Registry(resolve_tracking(env=env))
    history = registry.client.get_metric_history(result["run_id"], "epoch_train_loss")
    assert [point.step for point in history] == [1, 2]


def test_a_partner_that_does_not_fit_ends_the_job_in_one_line(
    partner: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow_training.entry import main

    env = _env(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["--family", "combined", "--seed", "4", "--holdout_fraction", "0.25", "--partner_dir", str(partner)])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: " in err and "held out another split" in err and "Traceback" not in err
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("bad job configuration: ") and "held out another split" in failure
