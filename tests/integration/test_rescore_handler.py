"""The training state machine's RescoreQueue Lambda against DynamoDB, the documents bucket and a champion
published to the model bucket (moto): the review queue scored again by the new champion from the stored text,
within the invocation's time, and carried on from its cursor by the next invocation."""

from __future__ import annotations

import json
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
from docflow.model_source import DEFAULT_CACHE_ROOT, ChampionPointer, sha256_file
from docflow.records import DocumentRecord
from docflow.samples import EMAIL, LETTER, MEMO, REPORT
from docflow.settings import DEFAULT_MODEL_DIR
from docflow.values import ExtractionResult, PageText, Status
from docflow_training.publish import BlobPublishTarget, stamp_version
from tests.aws_fixtures import BUCKET, TABLE, create_resources

pytestmark = pytest.mark.integration

MODEL_BUCKET = "docflow-models-test"
# A registry number no other test publishes: the function caches downloads under /tmp/docflow-models/v{N}.
VERSION = 7417
NEXT_VERSION = 7418
CHAMPION = str(VERSION)
OLD = "old"  # the model version whose predictions queued the documents
QUEUED_AT = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@dataclass
class FakeLambdaContext:
    function_name: str = "docflow-rescore-queue"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:docflow-rescore-queue"
    aws_request_id: str = "9a1c5e2b-7d4f-4c3a-8e6b-1f0d2c3b4a59"
    remaining_ms: int = 900_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[DynamoRecordStore]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_MODEL_BUCKET", MODEL_BUCKET)
    for version in (VERSION, NEXT_VERSION):
        shutil.rmtree(DEFAULT_CACHE_ROOT / f"v{version}", ignore_errors=True)
    with mock_aws():
        create_resources()
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=MODEL_BUCKET)
        _publish(tmp_path / "model")
        yield DynamoRecordStore(TABLE)
    for version in (VERSION, NEXT_VERSION):
        shutil.rmtree(DEFAULT_CACHE_ROOT / f"v{version}", ignore_errors=True)


def _publish(model_dir: Path, version: int = VERSION) -> None:
    """The set-up model, published as champion v{version} the way Publish does: its predictions name it."""
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    stamp_version(model_dir, "docflow-classifier", version, None)
    files = {p.name: sha256_file(p) for p in sorted(model_dir.iterdir())}
    pointer = ChampionPointer(model_dir=f"docflow-classifier/v{version}", version=version, files=files)
    BlobPublishTarget(S3BlobStore(MODEL_BUCKET)).write(model_dir, pointer)


def _queue(records: DynamoRecordStore, n: int, text: str, *, minutes: int = 0) -> DocumentRecord:
    """A document the old model sent to review, its text stored by ExtractText."""
    document_id = f"{n:064x}"
    page = PageText(page=1, text=text, source="pdf_text", words=len(text.split()), seconds=0.01)
    S3BlobStore(BUCKET).put(f"text/{document_id}.json", ExtractionResult(pages=[page]).model_dump_json().encode())
    when = QUEUED_AT + timedelta(minutes=minutes)
    record = DocumentRecord(
        document_id=document_id,
        status=Status.NEEDS_REVIEW,
        source=f"s3://{BUCKET}/incoming/{n}.pdf",
        text_source="pdf_text",
        predicted_class="report",
        confidence=0.41,
        model_version=OLD,
        code="LOW_CONFIDENCE",
        reason="confidence 0.41 in 'report' is below the review threshold 0.60",
        created_at=when,
        updated_at=when,
    )
    records.put_document(record)
    return record


def _invoke(state: dict[str, Any], remaining_ms: int = 900_000) -> dict[str, Any]:
    from docflow.handlers import rescore_queue

    result: dict[str, Any] = rescore_queue.handler(state, FakeLambdaContext(remaining_ms=remaining_ms))
    return result


# What the training state machine hands the first invocation: its state after Publish.
AFTER_PUBLISH: dict[str, Any] = {
    "prepared": {"job_name": "docflow-train-1"},
    "training": {"job_name": "docflow-train-1", "status": "Completed"},
    "decision": {"promoted": True, "version": VERSION},
    "publish": {"published": {"version": VERSION}},
}


def test_the_queue_is_scored_again_by_the_new_champion(
    aws: DynamoRecordStore, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a letter and a memo the old model was unsure of, and a document with no text
    letter = _queue(aws, 1, LETTER, minutes=0)
    memo = _queue(aws, 2, MEMO, minutes=1)
    blank = _queue(aws, 3, "", minutes=2)
    # and a document already decided, which is not in the queue
    decided = DocumentRecord(
        document_id=f"{4:064x}", status=Status.CLASSIFIED, source="s3://x/4.pdf", model_version=OLD
    )
    aws.put_document(decided)

    # When the state machine invokes the function after Publish
    result = _invoke(AFTER_PUBLISH)

    # Then the whole queue was looked at in one go by the champion just published
    assert result == {
        "done": True,
        "cursor": None,
        "scanned": 3,
        "settled": 2,
        "still_queued": 1,
        "current": 0,
        "skipped": {},
        "model_version": CHAMPION,
        "invocations": 1,
    }
    # The confident ones left the queue, classified by the champion, naming the version that had queued them
    for queued, cls in ((letter, "letter"), (memo, "memo")):
        record = aws.get_document(queued.document_id)
        assert record is not None
        assert record.status is Status.CLASSIFIED and record.predicted_class == cls
        assert record.model_version == CHAMPION and record.rescored_from == OLD
        assert record.code is None and record.reason is None
        # the champion's prediction joined the document's history
        assert [(p.predicted_class, p.model_version) for p in aws.list_predictions(queued.document_id)] == [
            (cls, CHAMPION)
        ]
        result_file = json.loads(S3BlobStore(BUCKET).get(f"results/{queued.document_id}.json"))
        assert result_file["document"]["status"] == "CLASSIFIED"
        assert result_file["prediction"]["model_version"] == CHAMPION
    # The one without text stays queued, in its place, with the champion's reason
    still = aws.get_document(blank.document_id)
    assert still is not None and still.status is Status.NEEDS_REVIEW
    assert still.code == "NO_TEXT" and still.model_version == CHAMPION and still.rescored_from == OLD
    assert still.updated_at == blank.updated_at
    assert aws.list_review_queue()[0] == [still]
    # A decided document is left alone
    assert aws.get_document(decided.document_id) == decided
    # And one log line says what was done, beside the champion's Predictions (EMF), one per document scored
    # (the log line from the records: the logger's stream may be one an earlier test captured)
    stdout = capsys.readouterr().out.splitlines()
    [line] = [r for r in caplog.records if r.getMessage() == "review queue rescored"]
    assert (line.scanned, line.settled, line.still_queued, line.model_version) == (3, 2, 1, CHAMPION)
    emf = [json.loads(x) for x in stdout if '"_aws"' in x]
    predictions = [(m["document_class"], m["model_version"]) for m in emf if "Predictions" in m]
    assert len(predictions) == 3 and {("letter", CHAMPION), ("memo", CHAMPION)} <= set(predictions)
    assert {version for _, version in predictions} == {CHAMPION}


def test_out_of_time_it_returns_a_cursor_and_the_next_invocation_finishes(aws: DynamoRecordStore) -> None:
    letter = _queue(aws, 1, LETTER)
    # Given an invocation left with no more than the safety margin
    first = _invoke(AFTER_PUBLISH, remaining_ms=15_000)
    # Then it stops before the first document, with a cursor to go on from (the queue's start)
    assert first["done"] is False and isinstance(first["cursor"], str)
    assert first["scanned"] == 0 and first["invocations"] == 1
    record = aws.get_document(letter.document_id)
    assert record is not None and record.status is Status.NEEDS_REVIEW and record.model_version == OLD

    # When the state machine loops back with that result at $.rescore
    second = _invoke({**AFTER_PUBLISH, "rescore": first})
    assert second["done"] is True and second["cursor"] is None
    assert (second["scanned"], second["settled"], second["invocations"]) == (1, 1, 2)
    record = aws.get_document(letter.document_id)
    assert record is not None and record.status is Status.CLASSIFIED and record.rescored_from == OLD


class FakeClock:
    """time.monotonic of the handler and of rescore_queue: each document rescored takes ten seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_queue_longer_than_one_invocation_is_done_across_several(
    aws: DynamoRecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow.handlers import rescore_queue as handler_module
    from docflow.pipeline import rescore

    clock = FakeClock()
    monkeypatch.setattr(handler_module, "time", clock)
    monkeypatch.setattr(rescore, "time", clock)
    monkeypatch.setattr(rescore, "PAGE_SIZE", 2)  # several pages: the cursor moves on between them
    rescore_one = rescore._rescore_one

    def ten_seconds_each(*args: Any) -> None:
        rescore_one(*args)
        clock.now += 10

    monkeypatch.setattr(rescore, "_rescore_one", ten_seconds_each)
    texts = [LETTER, MEMO, "", EMAIL, REPORT, LETTER, MEMO]
    queued = [_queue(aws, i + 1, text, minutes=i) for i, text in enumerate(texts)]

    # Each invocation has 25 s to spend after the margin: three documents, then it stops
    state = dict(AFTER_PUBLISH)
    results = []
    while not state.get("rescore", {}).get("done"):
        assert len(results) < 10, results
        state["rescore"] = _invoke(state, remaining_ms=45_000)
        results.append(state["rescore"])

    assert [r["done"] for r in results] == [False, False, True]
    assert all(isinstance(r["cursor"], str) for r in results[:-1]) and results[-1]["cursor"] is None
    assert [r["invocations"] for r in results] == [1, 2, 3]
    # Every queued document was scored by the champion exactly once: one prediction each in its history
    for record in queued:
        assert [p.model_version for p in aws.list_predictions(record.document_id)] == [CHAMPION], record.document_id
        now = aws.get_document(record.document_id)
        assert now is not None and now.model_version == CHAMPION and now.rescored_from == OLD
    settled = sum(r["settled"] for r in results)
    still_queued = sum(r["still_queued"] for r in results)
    assert settled + still_queued == len(texts)
    assert aws.count_review_queue() == still_queued >= 1  # the blank one at least


def test_a_warm_function_rescores_with_the_champion_published_just_before(
    aws: DynamoRecordStore, tmp_path: Path
) -> None:
    # Given a function that served champion VERSION a moment ago (within model_refresh_seconds)
    assert _invoke(AFTER_PUBLISH)["model_version"] == CHAMPION
    # When the next run publishes another champion and invokes it again
    _publish(tmp_path / "next", NEXT_VERSION)
    letter = _queue(aws, 1, LETTER)
    result = _invoke(AFTER_PUBLISH)
    # Then the queue is scored by the champion the pointer names now
    assert result["model_version"] == str(NEXT_VERSION) and result["settled"] == 1
    record = aws.get_document(letter.document_id)
    assert record is not None and record.model_version == str(NEXT_VERSION)
