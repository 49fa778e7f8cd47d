"""The AWS training loop's domain, on the local stores: PrepareData's layout of the channels, job names,
the gate's numpy metrics (held to scikit-learn's), an empty channel, and the new-labels trigger."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from docflow.adapters.files import LocalBlobStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.errors import PermanentError
from docflow.ports import EventPublisher
from docflow.records import DocumentRecord
from docflow.retrain import EVENT_DETAIL_TYPE, EVENT_SOURCE, count_new_label
from docflow.values import ExtractionResult, PageText, Status
from docflow_training.entry import JobPaths
from docflow_training.loop import LoopSettings, PrepareRequest, job_name_for, prepare_training_data
from docflow_training.registry import per_class_recall_f1

pytestmark = pytest.mark.unit

BUCKET = "models-bucket"
STARTED = datetime(2026, 11, 26, 3, 0, 5, tzinfo=UTC)


class RecordedEvents(EventPublisher):
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def publish(self, source: str, detail_type: str, detail: dict[str, Any]) -> None:
        self.sent.append((source, detail_type, detail))


@pytest.fixture
def stores(tmp_path: Path) -> tuple[SqliteRecordStore, LocalBlobStore, LocalBlobStore]:
    return (
        SqliteRecordStore(tmp_path / "db.sqlite3"),
        LocalBlobStore(tmp_path / "docs"),
        LocalBlobStore(tmp_path / "models"),
    )


def _corpus(models: LocalBlobStore, classes: dict[str, int], prefix: str = "training/corpus/") -> None:
    for label, n in classes.items():
        for i in range(n):
            models.put(f"{prefix}{label}/{i}.txt", f"{label} document {i}".encode())


def _label(records: SqliteRecordStore, docs: LocalBlobStore, document_id: str, label: str, text: str | None) -> None:
    records.put_document(DocumentRecord(document_id=document_id, status=Status.CLASSIFIED, source="up", label=label))
    if text is not None:
        page = PageText(page=1, text=text, source="ocr", confidence=90.0, words=3, seconds=0.1)
        docs.put(f"text/{document_id}.json", ExtractionResult(pages=[page]).model_dump_json().encode())


def test_prepare_lays_out_corpus_feedback_and_a_stand_in_for_no_validation_set(stores: Any) -> None:
    records, docs, models = stores
    _corpus(models, {"Email": 3, "Memo": 2})
    _label(records, docs, "a" * 64, "memo", "MEMORANDUM to all staff")
    _label(records, docs, "b" * 64, "email", None)  # labelled, but its text is gone: skipped, counted
    request = PrepareRequest(execution_name="exec-1", started_at=STARTED, request={"trigger": "labels"})

    job = prepare_training_data(
        request, records=records, documents=docs, models=models, bucket=BUCKET, settings=LoopSettings()
    )

    assert job.job_name == job_name_for("exec-1", STARTED)
    assert job.trigger == "labels" and job.corpus == {"Email": 3, "Memo": 2}
    assert job.channels["train"] == f"s3://{BUCKET}/training/corpus/"
    prefix = f"training/jobs/{job.job_name}/"
    assert job.channels["feedback"] == f"s3://{BUCKET}/{prefix}feedback/"
    assert job.output_path == f"s3://{BUCKET}/training/jobs"
    assert models.get(f"{prefix}feedback/memo/{'a' * 64}.txt") == b"MEMORANDUM to all staff"
    manifest = json.loads(models.get(f"{prefix}feedback/manifest.json"))
    assert manifest == {
        "n_feedback": 1,
        "by_label": {"memo": 1},
        "n_out_of_scope": 0,
        "skipped": {"no extracted text": 1},
    }
    # No external validation set: the channel still exists (SageMaker refuses an empty one), holding only a manifest
    assert job.external_validation is False
    assert job.channels["validation"] == f"s3://{BUCKET}/{prefix}validation/"
    assert list(models.list(f"{prefix}validation/")) == [f"{prefix}validation/manifest.json"]


def test_prepare_uses_an_external_validation_set_when_there_is_one(stores: Any) -> None:
    records, docs, models = stores
    _corpus(models, {"Email": 3, "Memo": 2})
    _corpus(models, {"Email": 1, "Memo": 1}, prefix="training/validation/")
    request = PrepareRequest(execution_name="exec-2", started_at=STARTED)
    job = prepare_training_data(
        request, records=records, documents=docs, models=models, bucket=BUCKET, settings=LoopSettings()
    )
    assert job.external_validation is True and job.trigger == "manual"
    assert job.channels["validation"] == f"s3://{BUCKET}/training/validation/"


def test_prepare_refuses_a_corpus_that_cannot_train_before_a_gpu_is_paid_for(stores: Any) -> None:
    records, docs, models = stores
    _corpus(models, {"Email": 5})
    request = PrepareRequest(execution_name="exec-3", started_at=STARTED)
    with pytest.raises(PermanentError, match="at least two classes"):
        prepare_training_data(
            request, records=records, documents=docs, models=models, bucket=BUCKET, settings=LoopSettings()
        )
    assert not list(models.list("training/jobs/"))


def test_job_names_are_valid_sagemaker_names_unique_per_execution() -> None:
    names = {job_name_for(f"execution-{i}" * 20, STARTED) for i in range(50)}
    assert len(names) == 50
    for name in names:
        assert len(name) <= 63 and name.startswith("docflow-train-20261126-030005-")


def test_numpy_metrics_match_scikit_learn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    for _ in range(200):
        classes = ["a", "b", "c", "d"][: rng.randint(1, 4)]
        n = rng.randint(1, 30)
        y_true = [rng.choice(classes) for _ in range(n)]
        y_pred = [rng.choice([*classes, "zz"]) for _ in range(n)]  # "zz": a class the model invents
        labels = sorted(set(y_true))
        recalls, f1s = per_class_recall_f1(y_true, y_pred, labels)
        expected_recall = sklearn_metrics.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
        expected_f1 = sklearn_metrics.f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
        assert recalls == pytest.approx(list(expected_recall))
        assert f1s == pytest.approx(list(expected_f1))


def test_a_channel_without_class_folders_is_no_data_set(tmp_path: Path) -> None:
    validation = tmp_path / "validation"
    validation.mkdir()
    (validation / "manifest.json").write_text('{"external_validation": false}')
    env = {"SM_CHANNEL_TRAIN": str(tmp_path), "SM_CHANNEL_VALIDATION": str(validation)}
    assert JobPaths.from_env(env).validation is None
    (validation / "memo").mkdir()
    (validation / "memo" / "1.txt").write_text("MEMORANDUM")
    assert JobPaths.from_env(env).validation == validation


def test_every_threshold_th_new_label_asks_for_retraining(stores: Any) -> None:
    records, _docs, _models = stores
    events = RecordedEvents()
    sent = [count_new_label(records, events, threshold=3) for _ in range(7)]
    assert sent == [False, False, True, False, False, True, False]
    assert events.sent == [
        (EVENT_SOURCE, EVENT_DETAIL_TYPE, {"labels_counted": 3, "threshold": 3}),
        (EVENT_SOURCE, EVENT_DETAIL_TYPE, {"labels_counted": 6, "threshold": 3}),
    ]


def test_threshold_zero_neither_counts_nor_sends(stores: Any) -> None:
    records, _docs, _models = stores
    events = RecordedEvents()
    assert count_new_label(records, events, threshold=0) is False
    assert events.sent == [] and records.get_counter("new-labels") == 0


def test_a_retried_gate_decides_a_job_under_the_version_it_already_has(stores: Any) -> None:
    from docflow_training.loop import DECISION_FILE, decided_version, next_version

    _, _, models = stores
    settings = LoopSettings()
    assert decided_version(models, settings, "job-a") is None
    models.put(f"{settings.version_prefix(1)}{DECISION_FILE}", json.dumps({"job_name": "job-a"}).encode())
    models.put(f"{settings.version_prefix(2)}{DECISION_FILE}", json.dumps({"job_name": "job-b"}).encode())
    models.put(f"{settings.version_prefix(2)}model.onnx", b"onnx")
    assert decided_version(models, settings, "job-a") == 1
    assert decided_version(models, settings, "job-b") == 2
    assert decided_version(models, settings, "job-c") is None
    assert next_version(models, settings) == 3  # a new job still gets a new version
