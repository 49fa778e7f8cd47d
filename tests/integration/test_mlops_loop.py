"""The MLOps loop end to end on the fixture corpus, from a clean DOCFLOW_HOME: the training job as a
local process → an MLflow run (SQLite under the home) → registry version → promotion gate →
published champion → Classify serves it; then a deliberately worse model refused by the gate,
and the `docflow model` commands."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docflow.adapters.files import LocalBlobStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.cli.model import model_app
from docflow.records import DocumentRecord
from docflow.settings import Settings
from docflow.values import ExtractionResult, PageText, Status
from docflow_training.launch import JobResult, run_local_job
from docflow_training.registry import CHALLENGER, CHAMPION, Registry
from docflow_training.tracking import resolve_tracking

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("mlflow", reason="the training extra (MLflow) is not installed")

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
HP = {"seed": 7, "vocab_size": 400, "c_grid": (1.0, 10.0), "cv_folds": 3, "holdout_fraction": 0.25, "min_eval_docs": 1}
ROTATED = {"Email": "News", "News": "Resume", "Resume": "Email"}
FEEDBACK_TEXT = "From: kim@example.com To: lee@example.com Subject: Re: meeting. Please reply to this email."


def _split_fixture(root: Path) -> tuple[Path, Path, Path]:
    """(train, validation, train with every label rotated): validation = the first 2 files of each class."""
    train, validation, rotated = root / "train", root / "validation", root / "rotated"
    for folder in sorted(CORPUS.iterdir()):
        for i, path in enumerate(sorted(folder.glob("*.txt"))):
            targets = [validation / folder.name] if i < 2 else [train / folder.name, rotated / ROTATED[folder.name]]
            for target in targets:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    return train, validation, rotated


def _label_a_document(home: Path) -> None:
    """A user's correction, as the API leaves it: a labelled record and the extracted text."""
    records, blobs = SqliteRecordStore(home / "docflow.sqlite3"), LocalBlobStore(home / "blobs")
    records.put_document(DocumentRecord(document_id="f" * 64, status=Status.NEEDS_REVIEW, source="up", label="email"))
    page = PageText(page=1, text=FEEDBACK_TEXT, source="ocr", confidence=88.0, words=14, seconds=0.1)
    blobs.put(f"text/{'f' * 64}.json", ExtractionResult(pages=[page]).model_dump_json().encode())


class Loop:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.settings = Settings(home=self.home)
        self.train, self.validation, self.rotated = _split_fixture(root / "data")
        self.first: JobResult
        self.worse: JobResult

    def registry(self) -> Registry:
        return Registry(resolve_tracking(self.home))


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    mp = pytest.MonkeyPatch()
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "DOCFLOW_MODEL_DIR", "DOCFLOW_BACKEND"):
        mp.delenv(var, raising=False)
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    state = Loop(tmp_path_factory.mktemp("mlops"))
    _label_a_document(state.home)
    lines: list[str] = []
    # Given a clean home, when the job runs with a fixed validation set
    state.first = run_local_job(
        state.train, state.settings, hyperparameters=HP, validation_dir=state.validation, echo=lines.append
    )
    # And then a model trained on the same documents with every label wrong, against the same validation set
    state.worse = run_local_job(
        state.rotated,
        state.settings,
        hyperparameters=HP,
        validation_dir=state.validation,
        include_feedback=False,
        echo=lines.append,
    )
    yield state
    mp.undo()


def test_first_run_is_tracked_registered_and_promoted(loop: Loop) -> None:
    first = loop.first
    assert first.version == 1 and first.promoted
    assert first.decision and first.decision["summary"] == "no champion yet: the first model is promoted"
    assert first.n_feedback == 1
    assert first.device["kind"] in ("cpu", "cuda")

    registry = loop.registry()
    client = registry.client
    runs = client.search_runs([registry.experiment_id])
    run = next(r for r in runs if r.info.run_id == first.run_id)
    params, metrics = run.data.params, run.data.metrics
    # Params: the config, the device, the dataset's identity and size (feedback included)
    assert params["train.seed"] == "7" and params["train.c_grid"] == "1,10"
    assert params["device"] == first.device["kind"] and params["device.fit"] == "cpu"
    assert params["n_feedback"] == "1"
    assert params["dataset.n_documents"] == str(19 + 1)  # 25 fixture documents - 6 validation + 1 feedback
    assert len(params["dataset.sha256"]) == 64
    assert params["holdout.source"] == "validation channel" and params["holdout.n_documents"] == "6"
    # Metrics: held-out, per class, validation, and the C grid as steps
    for key in (
        "holdout_macro_f1",
        "holdout_accuracy",
        "holdout_recall.email",
        "validation_macro_f1",
        "review_threshold",
    ):
        assert 0.0 <= metrics[key] <= 1.0
    history = client.get_metric_history(first.run_id, "cv_accuracy")
    assert [m.step for m in history] == [0, 1]
    assert [m.value for m in client.get_metric_history(first.run_id, "cv_c")] == [1.0, 10.0]
    # Artifacts: the confusion matrix, the per-class report, the gate's inputs, the ONNX model
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"confusion_matrix.png", "per_class_report.json", "gate"} <= artifacts
    assert {a.path for a in client.list_artifacts(first.run_id, "gate")} == {
        "gate/holdout.jsonl",
        "gate/train_manifest.json",
    }
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == params["dataset.sha256"][:36]

    # The registry: version 1 carries the model and all the files Classify needs
    version = registry.version(1)
    assert version.run_id == first.run_id
    assert version.tags["gate.decision"] == "promoted"
    model_dir = registry.download_model_dir(1, loop.home.parent / "v1-download")
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(
        ["model.onnx", "tokenizer.json", "labels.json", "config.json", "metrics.json", "baseline.json"]
    )


def test_champion_is_published_and_served_with_its_registry_version(loop: Loop) -> None:
    pointer = json.loads((loop.home / "models" / "champion.json").read_text())
    assert pointer["version"] == 1 and pointer["model_dir"] == "docflow-classifier/v1"
    model_dir = loop.home / "models" / "docflow-classifier" / "v1"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["version"] == "1" and config["registry"]["run_id"] == loop.first.run_id
    # the corpus it came from, not the job's working copy (feedback merged into a temporary folder)
    assert config["training_data"]["path"] == str(loop.train.resolve())
    assert len(config["content_version"]) == 12  # the training content hash, kept

    # Classify resolves the champion from the home and records the registry version on each prediction
    from docflow.context import build_context
    from docflow.domain.classifier import clear_classifier_cache

    clear_classifier_cache()
    prediction = build_context(loop.settings).classifier().predict(FEEDBACK_TEXT)
    assert prediction.model_name == "docflow-classifier" and prediction.model_version == "1"


def test_a_worse_model_is_refused_with_its_reasons(loop: Loop) -> None:
    worse = loop.worse
    assert worse.version == 2 and not worse.promoted
    decision = worse.decision or {}
    assert decision["champion_version"] == 1
    # Both models were scored on the same 6 validation documents, none of which the champion trained on
    assert decision["n_eval"] == 6 and decision["n_excluded"] == 0
    challenger, champion = decision["challenger_scores"], decision["champion_scores"]
    assert challenger["n_docs"] == champion["n_docs"] == 6
    assert challenger["macro_f1"] < champion["macro_f1"]
    assert any(r.startswith("macro-F1") for r in decision["reasons"])
    assert any(r.startswith("recall of") for r in decision["reasons"])

    registry = loop.registry()
    tags = registry.version(2).tags
    assert tags["gate.decision"] == "refused"
    assert tags["gate.champion_version"] == "1"
    assert float(tags["gate.challenger_macro_f1"]) < float(tags["gate.champion_macro_f1"])
    # each model's own calibration, as its metrics.json records it (tiny corpora: not reached)
    assert challenger["review_calibrated"] is False and tags["gate.challenger_review_calibrated"] == "false"
    assert "recall of" in tags["gate.reasons"]
    assert json.loads(tags["gate.policy"]) == {"max_recall_drop": 0.05, "min_eval_docs": 1, "min_macro_f1_gain": 0.0}
    # The champion stays; the refused version is the challenger; nothing new was published
    assert int(registry.alias(CHAMPION).version) == 1
    assert int(registry.alias(CHALLENGER).version) == 2
    assert json.loads((loop.home / "models" / "champion.json").read_text())["version"] == 1
    assert worse.published is None


def test_model_commands_list_promote_and_roll_back(loop: Loop) -> None:
    runner = CliRunner()
    home = ["--home", str(loop.home)]

    listed = runner.invoke(model_app, ["list", "--json", *home])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["version"], r["aliases"], r["gate_decision"]) for r in rows] == [
        (2, [CHALLENGER], "refused"),
        (1, [CHAMPION], "promoted"),
    ]
    table = runner.invoke(model_app, ["list", *home])
    assert table.exit_code == 0 and "refused" in table.stdout

    # Given a document waiting for a person, queued by an older model
    records, blobs = SqliteRecordStore(loop.home / "docflow.sqlite3"), LocalBlobStore(loop.home / "blobs")
    waiting = "e" * 64
    records.put_document(
        DocumentRecord(
            document_id=waiting, status=Status.NEEDS_REVIEW, source="up", model_version="0", code="LOW_CONFIDENCE"
        )
    )
    page = PageText(page=1, text=FEEDBACK_TEXT, source="ocr", confidence=88.0, words=14, seconds=0.1)
    blobs.put(f"text/{waiting}.json", ExtractionResult(pages=[page]).model_dump_json().encode())

    # An operator overrides the gate: v2 becomes the champion and is published
    promoted = runner.invoke(model_app, ["promote", "2", *home])
    assert promoted.exit_code == 0, promoted.output
    # And the review queue is scored again by it, from the stored text: the record keeps both versions
    assert "review queue re-scored by 2" in promoted.output
    rescored = records.get_document(waiting)
    assert rescored is not None and (rescored.model_version, rescored.rescored_from) == ("2", "0")
    assert [p.model_version for p in records.list_predictions(waiting)] == ["2"]
    assert json.loads((loop.home / "models" / "champion.json").read_text())["version"] == 2
    assert (
        json.loads((loop.home / "models" / "docflow-classifier" / "v2" / "config.json").read_text())["version"] == "2"
    )
    assert loop.registry().version(2).tags["champion.previous"] == "1"

    # Rollback gives the alias back to v1 and republishes it
    rolled = runner.invoke(model_app, ["rollback", *home])
    assert rolled.exit_code == 0, rolled.output
    assert int(loop.registry().alias(CHAMPION).version) == 1
    assert json.loads((loop.home / "models" / "champion.json").read_text())["version"] == 1

    # Promoting the champion again changes nothing; a publish that fails leaves the champion as it was
    same = runner.invoke(model_app, ["promote", "1", *home])
    assert same.exit_code == 0 and "already the champion" in same.output
    from moto import mock_aws

    with mock_aws():
        failed = runner.invoke(model_app, ["promote", "2", *home, "--bucket", "s3://no-such-bucket/models"])
    assert failed.exit_code == 1 and "Publishing v2" in failed.output, failed.output
    assert int(loop.registry().alias(CHAMPION).version) == 1

    # v1 replaced nothing: there is nowhere further to roll back to
    again = runner.invoke(model_app, ["rollback", *home])
    assert again.exit_code == 1 and "nothing to roll back to" in again.output
    missing = runner.invoke(model_app, ["promote", "9", *home])
    assert missing.exit_code == 1 and "no version 9" in missing.output

    # Published, but the alias could not move: the command says the model is serving and how to agree
    from mlflow.exceptions import MlflowException

    def refuse(self: Registry, version: int, reason: str = "manual") -> int | None:
        raise MlflowException("the tracking store is read-only")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Registry, "promote", refuse)
        half = runner.invoke(model_app, ["promote", "2", *home])
    assert half.exit_code == 1 and "read-only" in half.output
    assert "v2 is published and serving" in half.output and "promote 2 --no-publish" in half.output
    assert json.loads((loop.home / "models" / "champion.json").read_text())["version"] == 2
    assert runner.invoke(model_app, ["promote", "2", "--no-publish", *home]).exit_code == 0
    assert int(loop.registry().alias(CHAMPION).version) == 2
    assert runner.invoke(model_app, ["promote", "1", *home]).exit_code == 0  # as the next tests expect


def test_publish_to_the_model_bucket(loop: Loop, tmp_path: Path) -> None:
    from moto import mock_aws

    from docflow.adapters.s3 import S3BlobStore
    from docflow.domain.classifier import TextClassifier
    from docflow.model_source import build_model_source

    with mock_aws():
        import boto3

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="docflow-models-test")
        result = CliRunner().invoke(
            model_app, ["publish", "--home", str(loop.home), "--bucket", "s3://docflow-models-test/models"]
        )
        assert result.exit_code == 0, result.output
        bucket = S3BlobStore("docflow-models-test")
        keys = set(bucket.list("models/"))
        assert "models/champion.json" in keys and "models/docflow-classifier/v1/model.onnx" in keys
        settings = Settings(home=loop.home, backend="aws", model_bucket="docflow-models-test")
        served = build_model_source(settings, cache_root=tmp_path / "cache").model_dir()
        assert served == tmp_path / "cache" / "v1"
        assert TextClassifier(served).version == "1"


def test_a_restarted_job_resumes_from_its_checkpoint(loop: Loop, tmp_path: Path) -> None:
    """Spot: SageMaker restarts an interrupted job with the checkpoint directory restored. The job
    must not fit again, nor log a second run or register a second version."""
    from docflow_training.entry import main

    tracking = resolve_tracking(loop.home)
    env = {
        "SM_CHANNEL_TRAIN": str(loop.train),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "DOCFLOW_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "MLFLOW_TRACKING_URI": tracking.uri,
        "MLFLOW_EXPERIMENT_NAME": "docflow-checkpoint-test",
    }
    args = ["--seed", "7", "--vocab_size", "400", "--c_grid", "10", "--registered_model", "docflow-checkpoint-test"]

    assert main(args, env) == 0
    first = json.loads((tmp_path / "output" / "data" / "result.json").read_text())
    (tmp_path / "output" / "data" / "result.json").unlink()
    assert main(args, env) == 0
    second = json.loads((tmp_path / "output" / "data" / "result.json").read_text())

    assert second["run_id"] == first["run_id"] and second["version"] == first["version"] == 1
    registry = Registry(tracking, "docflow-checkpoint-test")
    experiment = registry.client.get_experiment_by_name("docflow-checkpoint-test")
    assert len(registry.client.search_runs([experiment.experiment_id])) == 1
    assert [row.version for row in registry.versions()] == [1]
    # The contract's outputs are there both times: the model directory and the confusion matrix
    assert (tmp_path / "model" / "model.onnx").is_file()
    assert (tmp_path / "output" / "data" / "confusion_matrix.png").stat().st_size > 1000


def test_a_bad_job_configuration_fails_with_a_reason(tmp_path: Path) -> None:
    from docflow_training.entry import main

    env = {"SM_CHANNEL_TRAIN": str(CORPUS), "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data")}
    assert main(["--epochs", "10"], env) == 2
    assert "unknown hyperparameters for the linear family ['epochs']" in (tmp_path / "output" / "failure").read_text()


def test_a_promoted_model_whose_publish_fails_does_not_become_champion(tmp_path: Path) -> None:
    """Files first, then the alias: the registry never names a champion that is not what Classify serves."""
    from docflow_training.launch import JobFailedError

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    home = tmp_path / "home"
    hp = {**HP, "publish_to": str(blocked / "models")}
    with pytest.raises(JobFailedError):
        run_local_job(CORPUS, Settings(home=home), hyperparameters=hp, include_feedback=False, echo=lambda _: None)
    registry = Registry(resolve_tracking(home))
    assert registry.version(1).tags["gate.decision"] == "promoted"  # decided, but not published
    assert registry.champion() is None
