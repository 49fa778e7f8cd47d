"""`docflow train --sagemaker`: the SDK v3 ModelTrainer drives a CreateTrainingJob request, under moto.

The request is captured at the boto3 level (``before-parameter-build.sagemaker.CreateTrainingJob``,
the parameters exactly as the SDK hands them to botocore) and asserted on: GPU instance, spot with
checkpointing, S3 channels (the corpus, users' labels), the entry point and its pinned
requirements, and MLflow pointed at a managed tracking server's ARN.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from docflow.adapters.files import LocalBlobStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.records import DocumentRecord
from docflow.settings import Settings
from docflow.values import ExtractionResult, PageText, Status
from docflow_training.launch import SageMakerJobConfig, launch_sagemaker

pytestmark = pytest.mark.integration
pytest.importorskip("sagemaker.train", reason="the sagemaker extra is not installed")

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/docflow-training"
MLFLOW_ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/docflow"
CORPUS_URI = "s3://docflow-corpus-test/tobacco3482/"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[boto3.Session, list[dict[str, Any]]]]:
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        s3 = session.client("s3")
        s3.create_bucket(Bucket="docflow-corpus-test")
        s3.put_object(Bucket="docflow-corpus-test", Key="tobacco3482/Memo/1.txt", Body=b"MEMORANDUM")
        captured: list[dict[str, Any]] = []
        session.events.register(
            "before-parameter-build.sagemaker.CreateTrainingJob",
            lambda params, **_: captured.append(dict(params)),
        )
        yield session, captured


def _label_a_document(home: Path) -> None:
    records, blobs = SqliteRecordStore(home / "docflow.sqlite3"), LocalBlobStore(home / "blobs")
    records.put_document(DocumentRecord(document_id="e" * 64, status=Status.CLASSIFIED, source="up", label="memo"))
    page = PageText(page=1, text="MEMORANDUM to all staff", source="ocr", words=4, seconds=0.1)
    blobs.put(f"text/{'e' * 64}.json", ExtractionResult(pages=[page]).model_dump_json().encode())


def _channel(request: dict[str, Any], name: str) -> str:
    (channel,) = [c for c in request["InputDataConfig"] if c["ChannelName"] == name]
    uri: str = channel["DataSource"]["S3DataSource"]["S3Uri"]
    return uri


def _objects(session: boto3.Session, uri: str) -> dict[str, bytes]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = session.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {key[len(prefix) :].lstrip("/"): s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_spot_gpu_job_with_s3_channels_and_managed_mlflow(
    aws: tuple[boto3.Session, list[dict[str, Any]]], docflow_home: Path
) -> None:
    session, captured = aws
    _label_a_document(docflow_home)
    settings = Settings(home=docflow_home, model_bucket="docflow-models-test")
    job = SageMakerJobConfig(role_arn=ROLE, spot=True, mlflow_tracking_arn=MLFLOW_ARN, max_run_seconds=1800)

    launch = launch_sagemaker(
        CORPUS_URI, settings, job, hyperparameters={"seed": 3, "c_grid": (10.0, 30.0)}, boto_session=session
    )

    (request,) = captured
    # GPU by default, one instance, managed spot with a wait budget and checkpoints
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600}
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert request["CheckpointConfig"]["S3Uri"].startswith("s3://")
    assert request["RoleArn"] == ROLE
    # A CUDA image with Python 3.11 (the AWS PyTorch training image), running our entry script
    image = request["AlgorithmSpecification"]["TrainingImage"]
    assert image == launch.image_uri and "pytorch-training:2.5-gpu-py311" in image
    # MLflow: the managed tracking server's ARN; checkpoints where the job looks for them
    environment = request["Environment"]
    assert environment["MLFLOW_TRACKING_URI"] == MLFLOW_ARN
    assert environment["DOCFLOW_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"
    # Hyperparameters: the training config, where the corpus came from, where to publish a champion
    hp = request["HyperParameters"]
    assert hp["seed"] == "3" and hp["c_grid"] in ("[10.0, 30.0]", "10.0,30.0")
    assert hp["corpus_uri"] == CORPUS_URI and hp["publish_to"] == "s3://docflow-models-test/models"
    # Channels: the corpus from S3 as given; users' labels, the code and the SDK's drivers uploaded
    assert {c["ChannelName"] for c in request["InputDataConfig"]} == {"train", "feedback", "code", "sm_drivers"}
    assert _channel(request, "train") == CORPUS_URI
    feedback = _objects(session, _channel(request, "feedback"))
    assert feedback == {f"memo/{'e' * 64}.txt": b"MEMORANDUM to all staff"}
    assert launch.n_feedback == 1
    code = _objects(session, _channel(request, "code"))
    if len(code) == 1 and next(iter(code)).endswith(".tar.gz"):  # some SDK versions upload a tarball
        with tarfile.open(fileobj=io.BytesIO(next(iter(code.values())))) as tar:
            code = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert b"from docflow_training.entry import main" in code["sm_entry.py"]
    requirements = code["requirements.txt"].decode().splitlines()
    assert "mlflow==3.17.2" in requirements and "sagemaker-mlflow==0.5.0" in requirements
    assert any(line.startswith("onnxruntime==") for line in requirements)
    assert "docflow_training/entry.py" in code and "docflow/domain/classifier.py" in code
    assert not any(name.startswith("docflow/default_model/") for name in code)  # the job trains its own
    # The job exists as far as SageMaker (moto) knows
    described = session.client("sagemaker").describe_training_job(TrainingJobName=launch.job_name)
    assert described["TrainingJobName"] == request["TrainingJobName"]
    assert described["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"


def test_on_demand_cpu_job_without_checkpoints(
    aws: tuple[boto3.Session, list[dict[str, Any]]], docflow_home: Path
) -> None:
    session, captured = aws
    job = SageMakerJobConfig(
        role_arn=ROLE, instance_type="ml.m5.xlarge", mlflow_tracking_arn=MLFLOW_ARN, output_s3_uri="s3://out/x/"
    )
    launch_sagemaker(
        CORPUS_URI, Settings(home=docflow_home), job, validation="s3://docflow-corpus-test/val/", boto_session=session
    )
    (request,) = captured
    assert request["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert "pytorch-training:2.5-cpu-py311" in request["AlgorithmSpecification"]["TrainingImage"]
    assert not request.get("EnableManagedSpotTraining") and "CheckpointConfig" not in request
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]
    assert request["OutputDataConfig"]["S3OutputPath"] == "s3://out/x/"
    assert _channel(request, "validation") == "s3://docflow-corpus-test/val/"
    assert "feedback" not in {c["ChannelName"] for c in request["InputDataConfig"]}  # nobody labelled anything
    assert "publish_to" not in request["HyperParameters"]  # no model bucket configured: registry only


def test_a_sagemaker_job_needs_a_managed_mlflow_and_a_role(
    aws: tuple[boto3.Session, list[dict[str, Any]]], docflow_home: Path
) -> None:
    session, captured = aws
    settings = Settings(home=docflow_home)
    with pytest.raises(ValueError, match="managed MLflow"):
        launch_sagemaker(CORPUS_URI, settings, SageMakerJobConfig(role_arn=ROLE), boto_session=session)
    with pytest.raises(ValueError, match="managed MLflow"):
        job = SageMakerJobConfig(role_arn=ROLE, mlflow_tracking_arn="sqlite:///tmp/mlflow.db")
        launch_sagemaker(CORPUS_URI, settings, job, boto_session=session)
    with pytest.raises(ValueError, match="execution role"):
        launch_sagemaker(CORPUS_URI, settings, SageMakerJobConfig(mlflow_tracking_arn=MLFLOW_ARN), boto_session=session)
    assert captured == []


@pytest.mark.slow
def test_the_uploaded_code_runs_the_job_on_its_own(tmp_path: Path) -> None:
    """What the container gets (the two packages, no default model, no API) is enough to run the job."""
    import json
    import os
    import subprocess
    import sys

    from docflow_training.launch import SM_ENTRY_SCRIPT, stage_source_dir

    code = stage_source_dir(tmp_path / "code")
    env = {
        **os.environ,
        "SM_CHANNEL_TRAIN": str(Path(__file__).resolve().parents[1] / "fixtures" / "corpus"),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("PYTHONPATH", None)
    args = ["--seed", "7", "--vocab_size", "400", "--c_grid", "10", "--register_version", "false"]
    probe = "import docflow, docflow_training.entry as e; print(docflow.__file__); print(e.__file__)"
    where = subprocess.run([sys.executable, "-c", probe], cwd=code, env=env, capture_output=True, text=True, check=True)
    assert all(line.startswith(str(code)) for line in where.stdout.split())  # the staged copy, not the checkout

    done = subprocess.run([sys.executable, SM_ENTRY_SCRIPT, *args], cwd=code, env=env, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "output" / "data" / "result.json").read_text())
    assert result["run_id"] and result["version"] is None  # tracked, not registered
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "baseline.json",
        "config.json",
        "labels.json",
        "metrics.json",
        "model.onnx",
        "tokenizer.json",
    ]
