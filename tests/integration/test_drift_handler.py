"""The scheduled drift Lambda against DynamoDB records and a champion published to the model bucket (moto):
the DriftScore it emits in CloudWatch embedded metric format, per signal."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from docflow.adapters.dynamodb import DynamoRecordStore
from docflow.adapters.s3 import S3BlobStore
from docflow.domain.drift import DriftBaseline, Observation, assess_drift, build_baseline, write_baseline
from docflow.model_source import DEFAULT_CACHE_ROOT, ChampionPointer, sha256_file
from docflow.records import DocumentRecord
from docflow.values import Status
from docflow_training.publish import BlobPublishTarget
from tests.aws_fixtures import BUCKET, TABLE, create_resources

pytestmark = pytest.mark.integration

MODEL_BUCKET = "docflow-models-test"
# A registry number no other test publishes: the function caches downloads under /tmp/docflow-models/v{N}.
VERSION = 7301
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
LABELS = ["email", "form", "letter", "memo"]
SHARES = {"email": 0.4, "form": 0.2, "letter": 0.3, "memo": 0.1}
CONFIDENT = {0.95: 0.6, 0.85: 0.25, 0.65: 0.15}


@dataclass
class FakeLambdaContext:
    function_name: str = "docflow-drift"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:docflow-drift"
    aws_request_id: str = "0f6a9a4c-5a43-4c2e-9c1e-3b0d3f7f4b11"


def _draw(seed: int, n: int, shares: dict[str, float], confidence: dict[float, float]) -> list[Observation]:
    rng = random.Random(seed)
    classes = rng.choices(list(shares), weights=list(shares.values()), k=n)
    centres = rng.choices(list(confidence), weights=list(confidence.values()), k=n)
    return [
        Observation(predicted_class=cls, confidence=round(centre + rng.uniform(-0.04, 0.04), 4))
        for cls, centre in zip(classes, centres, strict=True)
    ]


def _baseline() -> DriftBaseline:
    held_out = _draw(0, 1500, SHARES, CONFIDENT)
    return build_baseline(
        [o.predicted_class for o in held_out],
        [o.confidence for o in held_out],
        LABELS,
        model_name="docflow-classifier",
        model_version="c0ffee",
    )


def _publish(model_dir: Path) -> None:
    """Publish ``model_dir`` as champion v{VERSION} with the project's publisher."""
    files = {p.name: sha256_file(p) for p in sorted(model_dir.iterdir())}
    pointer = ChampionPointer(model_dir=f"docflow-classifier/v{VERSION}", version=VERSION, files=files)
    BlobPublishTarget(S3BlobStore(MODEL_BUCKET)).write(model_dir, pointer)


def _record(i: int, obs: Observation, version: str, minutes_ago: float) -> DocumentRecord:
    when = NOW - timedelta(minutes=minutes_ago)
    status = Status.CLASSIFIED if obs.confidence >= 0.5 else Status.NEEDS_REVIEW
    return DocumentRecord(
        document_id=f"{i:064x}",
        status=status,
        source=f"incoming/{i}.png",
        predicted_class=obs.predicted_class,
        confidence=obs.confidence,
        model_version=version,
        created_at=when,
        updated_at=when,
    )


def _event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": "5b7a2c1e-8f1d-4e0a-9d3c-2a6f1b0c9e77",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/docflow-drift"],
        "detail": {},
    }


def _drift_scores(stdout: str) -> dict[str, tuple[float, list[list[str]], str]]:
    """signal -> (DriftScore value, dimension sets, namespace) from the EMF blobs on stdout."""
    scores = {}
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        blob = json.loads(line)
        aws = blob.get("_aws")
        if not aws:
            continue
        directive = aws["CloudWatchMetrics"][0]
        if [m["Name"] for m in directive["Metrics"]] == ["DriftScore"]:
            values = blob["DriftScore"]
            assert isinstance(values, list) and len(values) == 1  # one datapoint per signal and run
            scores[blob["signal"]] = (values[0], directive["Dimensions"], directive["Namespace"])
            assert blob["service"] == "docflow"
    return scores


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)  # as the stack sets it on every function
    monkeypatch.setenv("DOCFLOW_MODEL_BUCKET", MODEL_BUCKET)
    monkeypatch.setenv("DOCFLOW_DRIFT_WINDOW_HOURS", "24")
    monkeypatch.setenv("DOCFLOW_DRIFT_THRESHOLD", "0.2")
    monkeypatch.setenv("DOCFLOW_DRIFT_MIN_PREDICTIONS", "200")
    shutil.rmtree(DEFAULT_CACHE_ROOT / f"v{VERSION}", ignore_errors=True)
    with mock_aws():
        create_resources()
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=MODEL_BUCKET)
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        # What the function reads of a model: its config (the served version) and its baseline
        (model_dir / "config.json").write_text(json.dumps({"name": "docflow-classifier", "version": str(VERSION)}))
        write_baseline(model_dir, _baseline())
        _publish(model_dir)
        yield model_dir
    shutil.rmtree(DEFAULT_CACHE_ROOT / f"v{VERSION}", ignore_errors=True)


def _invoke() -> dict[str, Any]:
    from docflow.handlers import drift

    result: dict[str, Any] = drift.handler(_event(), FakeLambdaContext())
    return result


def _store(observations: list[Observation], version: str = str(VERSION), offset: int = 0) -> None:
    records = DynamoRecordStore(TABLE)
    for i, obs in enumerate(observations):
        records.put_document(_record(offset + i, obs, version, minutes_ago=5 + i % (23 * 60)))


def test_shifted_window_emits_drift_scores_above_the_threshold(aws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a day of predictions by the champion where forms flood in and confidence sags
    shifted = _draw(1, 300, {"email": 0.1, "form": 0.6, "letter": 0.2, "memo": 0.1}, {0.55: 0.5, 0.45: 0.5})
    _store(shifted)
    # And predictions outside the window, and by another model version, that must not count
    DynamoRecordStore(TABLE).put_document(_record(10_000, shifted[0], str(VERSION), minutes_ago=25 * 60))
    _store(_draw(2, 50, SHARES, CONFIDENT), version="7300", offset=20_000)

    result = _invoke()

    # Then the report scores both signals over the champion's 300 predictions of the window
    expected = assess_drift(_baseline(), shifted, model_version=str(VERSION), min_predictions=200)
    assert result["verdict"] == "drift" and result["n_predictions"] == 300 and result["n_other_versions"] == 50
    assert result["model_version"] == str(VERSION)
    # And one DriftScore per signal goes out as EMF, namespace Docflow, dimensions exactly {service, signal}
    scores = _drift_scores(capsys.readouterr().out)
    assert set(scores) == {"class_distribution", "prediction_confidence"}
    for signal in expected.signals:
        value, dimensions, namespace = scores[str(signal.signal)]
        assert value == pytest.approx(signal.psi)
        assert value > 0.2
        assert dimensions == [["service", "signal"]] and namespace == "Docflow"


def test_unshifted_window_emits_scores_below_the_threshold(aws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(_draw(3, 400, SHARES, CONFIDENT))
    result = _invoke()
    assert result["verdict"] == "stable" and result["n_predictions"] == 400
    scores = _drift_scores(capsys.readouterr().out)
    assert set(scores) == {"class_distribution", "prediction_confidence"}
    assert all(0.0 <= value < 0.05 for value, _, _ in scores.values()), scores


def test_too_few_predictions_emit_no_score(aws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(_draw(4, 20, SHARES, CONFIDENT))
    result = _invoke()
    assert result["verdict"] == "insufficient_data" and result["n_predictions"] == 20
    # No DriftScore at all: the alarms treat the missing datapoint as not breaching
    assert _drift_scores(capsys.readouterr().out) == {}


def test_a_champion_without_a_baseline_says_so_and_emits_nothing(
    aws: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a champion published before baselines were stored with models
    (aws / "baseline.json").unlink()
    shutil.rmtree(DEFAULT_CACHE_ROOT / f"v{VERSION}", ignore_errors=True)
    _publish(aws)
    _store(_draw(5, 250, SHARES, CONFIDENT))

    result = _invoke()

    assert result["verdict"] == "no_baseline"
    assert "has no baseline.json" in result["reason"] and "Retrain" in result["reason"]
    assert _drift_scores(capsys.readouterr().out) == {}
    assert "drift not measured" in caplog.text
