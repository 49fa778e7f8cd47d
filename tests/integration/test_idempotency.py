"""At-least-once delivery: the same S3 event twice gives one record and one prediction.

EventBridge may deliver an "Object Created" event more than once, and two deliveries may run at once.
The idempotency key is the content hash (document_id) plus the object version the event names: Validate
reads that very version (the key may have been written again since), its conditional create of the document
record lets exactly one delivery own the work, and a later or concurrent delivery of the same object version
reports the outcome on record (replay). Another object or version with the same bytes is DUPLICATE of the
first; a delivery of an object already recorded (rejected, duplicate) is a replay too. The bucket is
versioned as the stack's is, and every event carries the version id S3 gave the put. Checked through the
Lambda handlers and through the synthesized state machine.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from moto import mock_aws

from docflow.samples import LETTER, MEMO, text_pdf
from tests.aws_fixtures import BUCKET, TABLE, create_resources, object_created
from tests.decisions import decide
from tests.integration import test_state_machine_asl as asl
from tests.integration.test_handlers import FakeLambdaContext

pytestmark = pytest.mark.integration

MEMO_PDF = text_pdf([MEMO])
MEMO_ID = hashlib.sha256(MEMO_PDF).hexdigest()

# The state machine harness's fixtures, shared with test_state_machine_asl.
machine = asl.machine
faults = asl.faults


def _event(key: str) -> dict[str, Any]:
    """S3's event for the version now under key."""
    return object_created(key)


def _items(document_id: str) -> dict[str, list[dict[str, Any]]]:
    """Everything the record store holds for one document, by kind."""
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(TABLE)
    items = table.query(KeyConditionExpression=Key("pk").eq(document_id), ConsistentRead=True)["Items"]
    return {kind: [i for i in items if i["sk"].startswith(kind)] for kind in ("DOCUMENT", "UPLOAD#", "PREDICTION#")}


def _all_documents() -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(TABLE)
    return [i for i in table.scan(ConsistentRead=True)["Items"] if i["sk"] == "DOCUMENT"]


# -- the handlers -----------------------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    with mock_aws():
        create_resources()
        yield boto3.client("s3", region_name="us-east-1")


def _rest(state: dict[str, Any]) -> dict[str, Any]:
    """The state machine after Validate: RecordOutcome, or ExtractText then Classify."""
    from docflow.handlers import classify, extract_text, record_outcome

    ctx = FakeLambdaContext()
    if not state["proceed"]:
        return record_outcome.handler(state, ctx)
    return classify.handler(extract_text.handler(state, ctx), ctx)


def _validate(event: dict[str, Any]) -> dict[str, Any]:
    from docflow.handlers import validate

    return validate.handler(event, FakeLambdaContext())


def test_handlers_same_event_twice_one_after_the_other(aws: Any) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    first = _rest(_validate(_event("incoming/memo.pdf")))
    second = _rest(_validate(_event("incoming/memo.pdf")))
    assert first["status"] in ("CLASSIFIED", "NEEDS_REVIEW") and first["replay"] is False
    assert second["replay"] is True and second["status"] == first["status"]
    assert second["prediction"] is None  # nothing was classified again
    items = _items(MEMO_ID)
    assert len(items["DOCUMENT"]) == 1 and len(items["PREDICTION#"]) == 1 and len(items["UPLOAD#"]) == 1
    assert len(_all_documents()) == 1


def test_handlers_same_event_twice_at_once(aws: Any) -> None:
    # Both deliveries validate before either has finished: the conditional create picks one owner.
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    a = _validate(_event("incoming/memo.pdf"))
    b = _validate(_event("incoming/memo.pdf"))
    assert (a["proceed"], b["proceed"]) == (True, False)
    assert b["replay"] is True and b["status"] == "PROCESSING"  # the other delivery owns the work
    second = _rest(b)
    first = _rest(a)
    assert first["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert second["replay"] is True
    items = _items(MEMO_ID)
    assert len(items["DOCUMENT"]) == 1 and len(items["PREDICTION#"]) == 1
    assert items["DOCUMENT"][0]["status"] == first["status"]


def test_handlers_other_version_same_bytes_other_name_is_duplicate(aws: Any) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    aws.put_object(Bucket=BUCKET, Key="incoming/copy.pdf", Body=MEMO_PDF)
    first = _rest(_validate(_event("incoming/memo.pdf")))
    copy = _rest(_validate(_event("incoming/copy.pdf")))
    assert copy["status"] == "DUPLICATE" and copy["duplicate_of"] == first["document_id"] == MEMO_ID
    items = _items(MEMO_ID)
    assert len(items["DOCUMENT"]) == 1 and len(items["PREDICTION#"]) == 1
    assert sorted(u["status"] for u in items["UPLOAD#"]) == sorted([first["status"], "DUPLICATE"])


def test_handlers_redelivery_reads_the_events_version_after_the_key_was_overwritten(aws: Any) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/scan.pdf", Body=MEMO_PDF)
    memo_event = _event("incoming/scan.pdf")
    first = _rest(_validate(memo_event))
    letter_pdf = text_pdf([LETTER])
    aws.put_object(Bucket=BUCKET, Key="incoming/scan.pdf", Body=letter_pdf)  # the key now holds a letter
    letter_event = _event("incoming/scan.pdf")
    # The memo's event, delivered again: its version's bytes are read (the memo), so it is a replay ...
    again = _rest(_validate(memo_event))
    assert again["replay"] is True and again["document_id"] == MEMO_ID and again["status"] == first["status"]
    # ... and the letter's own event is new work on the letter.
    letter = _rest(_validate(letter_event))
    assert letter["replay"] is False and letter["document_id"] == hashlib.sha256(letter_pdf).hexdigest()
    assert letter["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert len(_all_documents()) == 2
    assert len(_items(MEMO_ID)["PREDICTION#"]) == 1 and len(_items(letter["document_id"])["PREDICTION#"]) == 1
    memo_version = memo_event["detail"]["object"]["version-id"]
    [upload] = _items(MEMO_ID)["UPLOAD#"]
    assert upload["version_id"] == memo_version
    assert _items(MEMO_ID)["DOCUMENT"][0]["version_id"] == memo_version


def test_handlers_same_bytes_put_again_as_a_new_version_is_duplicate_once(aws: Any) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    v1 = _event("incoming/memo.pdf")
    first = _rest(_validate(v1))
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)  # the user sends it again
    v2 = _event("incoming/memo.pdf")
    assert v2["detail"]["object"]["version-id"] != v1["detail"]["object"]["version-id"]
    second = _rest(_validate(v2))
    assert second["status"] == "DUPLICATE" and second["replay"] is False and second["duplicate_of"] == MEMO_ID
    assert v1["detail"]["object"]["version-id"] in second["reason"]
    # v2's event delivered again: the DUPLICATE outcome on record, not a second one
    again = _validate(v2)
    assert again["replay"] is True and again["status"] == "DUPLICATE" and again["proceed"] is False
    _rest(again)
    items = _items(MEMO_ID)
    assert len(items["PREDICTION#"]) == 1 and items["DOCUMENT"][0]["status"] == first["status"]
    assert sorted((u["version_id"], u["status"]) for u in items["UPLOAD#"]) == sorted(
        [
            (v1["detail"]["object"]["version-id"], first["status"]),
            (v2["detail"]["object"]["version-id"], "DUPLICATE"),
        ]
    )


def test_handlers_rejected_object_delivered_again_is_recorded_once(aws: Any) -> None:
    html = b"<html><body>not a document</body></html>"
    aws.put_object(Bucket=BUCKET, Key="incoming/page.pdf", Body=html)
    event = _event("incoming/page.pdf")
    first = _rest(_validate(event))
    assert first["status"] == "REJECTED" and first["replay"] is False
    received = _items(first["document_id"])["UPLOAD#"][0]["received_at"]
    again = _rest(_validate(event))
    assert again["status"] == "REJECTED" and again["replay"] is True and again["code"] == first["code"]
    items = _items(first["document_id"])
    assert len(items["DOCUMENT"]) == 1 and len(items["UPLOAD#"]) == 1
    assert items["UPLOAD#"][0]["received_at"] == received  # not written again


@pytest.mark.parametrize("case", ["rejected", "duplicate"])
def test_handlers_an_outcome_at_validation_delivered_twice_at_once_is_recorded_once(aws: Any, case: str) -> None:
    from docflow.handlers import record_outcome

    if case == "duplicate":
        aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
        _rest(_validate(_event("incoming/memo.pdf")))
        aws.put_object(Bucket=BUCKET, Key="incoming/copy.pdf", Body=MEMO_PDF)
        event, status = _event("incoming/copy.pdf"), "DUPLICATE"
    else:
        aws.put_object(Bucket=BUCKET, Key="incoming/page.pdf", Body=b"<html><body>not a document</body></html>")
        event, status = _event("incoming/page.pdf"), "REJECTED"
    # Both deliveries validate before either records: neither can tell it is a replay yet ...
    a, b = _validate(event), _validate(event)
    assert (a["status"], b["status"]) == (status, status) and not a["replay"] and not b["replay"]
    # ... so RecordOutcome decides: one records the outcome, the other finds it on record
    first = record_outcome.handler(a, FakeLambdaContext())
    second = record_outcome.handler(b, FakeLambdaContext())
    assert (first["replay"], second["replay"]) == (False, True)
    uploads = _items(a["document_id"])["UPLOAD#"]
    mine = [u for u in uploads if u["version_id"] == event["detail"]["object"]["version-id"]]
    assert len(mine) == 1 and mine[0]["status"] == status


def test_handlers_a_failed_document_sent_twice_at_once_is_retried_once(aws: Any) -> None:
    from docflow.handlers import record_failure

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    failed = _validate(event)
    failed["error"] = {"Error": "OcrTimeoutError", "Cause": "tesseract took too long"}
    assert record_failure.handler(failed, FakeLambdaContext())["status"] == "FAILED"
    # The user's retry, delivered twice at once: one delivery takes the FAILED record over
    a, b = _validate(event), _validate(event)
    assert (a["proceed"], b["proceed"]) == (True, False)
    assert b["replay"] is True and b["status"] == "PROCESSING"
    done = _rest(a)
    assert done["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert _rest(b)["replay"] is True
    items = _items(MEMO_ID)
    assert len(items["PREDICTION#"]) == 1 and items["DOCUMENT"][0]["status"] == done["status"]


def test_handlers_event_for_a_deleted_version_fails_permanently(aws: Any) -> None:
    from docflow.errors import PermanentError

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=text_pdf([LETTER]))
    aws.delete_object(Bucket=BUCKET, Key="incoming/memo.pdf", VersionId=event["detail"]["object"]["version-id"])
    # The key still holds the letter, but the event names the memo's version: never process the wrong bytes.
    with pytest.raises(PermanentError, match="not found"):
        _validate(event)


def _owned(event: dict[str, Any], execution: str) -> dict[str, Any]:
    """Validate's and RecordFailure's input in the state machine: the event and the execution's id."""
    return {"event": event, "owner": f"arn:aws:states:us-east-1:123456789012:execution:pipeline:{execution}"}


def test_handlers_validate_retried_by_its_own_run_proceeds_and_another_run_replays(aws: Any) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    # The state machine's Retry of Validate (its first invocation's work landed, its reply did not) ...
    first = _validate(_owned(event, "one"))
    again = _validate(_owned(event, "one"))
    assert (first["proceed"], again["proceed"]) == (True, True) and again["replay"] is False
    assert again["owner"] == first["owner"] and again["status"] == "PROCESSING"
    # ... while another execution's delivery of the same object is a replay of the work in progress.
    other = _validate(_owned(event, "two"))
    assert other["proceed"] is False and other["replay"] is True and other["status"] == "PROCESSING"
    done = _rest(again)
    assert done["status"] in ("CLASSIFIED", "NEEDS_REVIEW") and done["replay"] is False
    assert _rest(other)["replay"] is True
    items = _items(MEMO_ID)
    assert len(items["DOCUMENT"]) == 1 and len(items["PREDICTION#"]) == 1 and len(items["UPLOAD#"]) == 1
    assert items["DOCUMENT"][0]["status"] == done["status"] and items["DOCUMENT"][0]["owner"] == first["owner"]
    # Once the document is done, its own execution's Validate (a redrive) proceeds no more.
    assert _validate(_owned(event, "one"))["replay"] is True


def _lose_first_reply(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """The store's `method` writes, its reply is lost, and botocore sends the request again: the retry's
    answer is what the caller sees (the condition fails on the item the first request wrote)."""
    from docflow.adapters.dynamodb import DynamoRecordStore

    original = getattr(DynamoRecordStore, method)

    def lost(self: DynamoRecordStore, record: Any, **kwargs: Any) -> Any:
        original(self, record, **kwargs)
        return original(self, record, **kwargs)

    monkeypatch.setattr(DynamoRecordStore, method, lost)


def test_handlers_a_lost_reply_to_the_create_is_not_taken_for_another_delivery(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    _lose_first_reply(monkeypatch, "create_document")
    state = _validate(_owned(event, "one"))
    assert state["proceed"] is True and state["replay"] is False
    done = _rest(state)
    assert done["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert _items(MEMO_ID)["DOCUMENT"][0]["status"] == done["status"]
    # Without an owner (a bare event: no run to tell apart) the record is another delivery's.
    assert _validate(event)["replay"] is True


def test_handlers_a_lost_reply_to_the_restart_of_a_failed_document_is_not_taken_for_another_delivery(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow.handlers import record_failure

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    failed = _validate(_owned(event, "one"))
    failed["error"] = {"Error": "OcrTimeoutError", "Cause": "tesseract took too long"}
    assert record_failure.handler(failed, FakeLambdaContext())["status"] == "FAILED"
    _lose_first_reply(monkeypatch, "restart_document")
    retry = _validate(_owned(event, "two"))  # the user's retry: restart_document's retry finds it PROCESSING
    assert retry["proceed"] is True and retry["replay"] is False
    assert _rest(retry)["status"] in ("CLASSIFIED", "NEEDS_REVIEW")


def test_handlers_record_failure_of_a_validate_that_failed_after_its_create(aws: Any) -> None:
    from docflow.handlers import record_failure

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    assert _validate(_owned(event, "one"))["proceed"] is True  # the record is written; then Validate fails
    error = {"Error": "Lambda.Unknown", "Cause": "the function timed out"}
    # Another execution's failure (the S3 event with its error, as the Catch hands it) leaves it alone ...
    other = record_failure.handler(_owned({**event, "error": error}, "two"), FakeLambdaContext())
    assert other["document_id"] == MEMO_ID and _items(MEMO_ID)["DOCUMENT"][0]["status"] == "PROCESSING"
    # ... its own execution's marks its own unfinished document FAILED.
    mine = record_failure.handler(_owned({**event, "error": error}, "one"), FakeLambdaContext())
    assert mine["status"] == "FAILED" and mine["owner"].endswith(":one")
    document = _items(MEMO_ID)["DOCUMENT"][0]
    assert document["status"] == "FAILED" and document["code"] == "Lambda.Unknown"


@pytest.mark.parametrize("over_the_limit", [False, True])
def test_handlers_record_failure_hashes_the_upload_only_within_the_size_limit(
    aws: Any, monkeypatch: pytest.MonkeyPatch, over_the_limit: bool
) -> None:
    # Validate failed: RecordFailure keys the failure by the content when it may read it, never streaming
    # more than the upload limit (an oversized object is keyed by its upload instead).
    from docflow.adapters.s3 import S3BlobStore
    from docflow.context import get_context
    from docflow.handlers import record_failure
    from docflow.settings import get_settings

    monkeypatch.setenv("DOCFLOW_MAX_BYTES", str(len(MEMO_PDF) - 1 if over_the_limit else len(MEMO_PDF)))
    get_settings.cache_clear()
    get_context.cache_clear()
    streamed: list[str] = []
    iter_chunks = S3BlobStore.iter_chunks

    def recording(self: S3BlobStore, key: str, *args: Any, **kwargs: Any) -> Any:
        streamed.append(key)
        return iter_chunks(self, key, *args, **kwargs)

    monkeypatch.setattr(S3BlobStore, "iter_chunks", recording)
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = {**_event("incoming/memo.pdf"), "error": {"Error": "Lambda.Unknown", "Cause": "out of memory"}}
    failed = record_failure.handler(event, FakeLambdaContext())
    upload_id = hashlib.sha256(f"upload:s3://{BUCKET}/incoming/memo.pdf".encode()).hexdigest()
    assert failed["document_id"] == (upload_id if over_the_limit else MEMO_ID)
    assert streamed == ([] if over_the_limit else ["incoming/memo.pdf"])
    assert _items(failed["document_id"])["DOCUMENT"][0]["status"] == "FAILED"


def test_runner_validate_retried_after_its_write_carries_on_and_another_run_replays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The embedded runner: each run owns its work (a fresh owner per run), as an execution does on AWS.
    from docflow.context import build_context
    from docflow.errors import TransientError
    from docflow.pipeline.runner import Runner
    from docflow.pipeline.state import DocumentRef
    from docflow.settings import get_settings

    ctx = build_context(get_settings())
    ctx.blobs.put("incoming/memo.pdf", MEMO_PDF)
    create = ctx.records.create_document
    lost: list[str] = []

    def create_then_lose_the_reply(record: Any) -> Any:
        existing = create(record)
        if not lost:
            lost.append(record.document_id)
            raise TransientError("the reply was lost")  # the runner's Retry runs Validate again
        return existing

    monkeypatch.setattr(ctx.records, "create_document", create_then_lose_the_reply)
    ref = DocumentRef(key="incoming/memo.pdf", source="incoming/memo.pdf")
    first = Runner(ctx, sleep=lambda _: None).run(ref)
    assert lost == [MEMO_ID]
    assert first.replay is False and first.status in ("CLASSIFIED", "NEEDS_REVIEW")
    record = ctx.records.get_document(MEMO_ID)
    assert record is not None and record.status == first.status and record.owner == first.owner
    second = Runner(ctx, sleep=lambda _: None).run(ref)
    assert second.owner != first.owner and second.replay is True and second.status == first.status


# -- the state machine ------------------------------------------------------------------------------------


def _start(m: dict[str, Any], event: dict[str, Any]) -> str:
    # Each delivery is its own execution (EventBridge names them uniquely).
    arn: str = m["sfn"].start_execution(stateMachineArn=m["arn"], name=str(uuid.uuid4()), input=json.dumps(event))[
        "executionArn"
    ]
    return arn


def _wait(m: dict[str, Any], arn: str, timeout: float = 180) -> tuple[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = m["sfn"].describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc["status"], json.loads(desc.get("output") or "null")
        time.sleep(0.2)
    raise AssertionError(f"execution still running after {timeout}s")


@pytest.mark.slow
def test_state_machine_same_event_twice_at_once_then_again_then_a_copy(machine: dict[str, Any]) -> None:
    machine["s3"].put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    # Two deliveries of one event, running together.
    runs = [_wait(machine, arn) for arn in [_start(machine, event), _start(machine, event)]]
    assert [status for status, _ in runs] == ["SUCCEEDED", "SUCCEEDED"]
    outputs = sorted((out for _, out in runs), key=lambda o: o["replay"])
    owner, replay = outputs
    assert owner["replay"] is False and owner["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert replay["replay"] is True and replay["status"] in ("PROCESSING", owner["status"])
    # A third delivery, after both finished.
    status, late = _wait(machine, _start(machine, event))
    assert status == "SUCCEEDED" and late["replay"] is True and late["status"] == owner["status"]
    # Another object version with the same bytes under another name.
    machine["s3"].put_object(Bucket=BUCKET, Key="incoming/copy.pdf", Body=MEMO_PDF)
    status, copy = _wait(machine, _start(machine, _event("incoming/copy.pdf")))
    assert status == "SUCCEEDED" and copy["status"] == "DUPLICATE" and copy["duplicate_of"] == MEMO_ID

    items = _items(MEMO_ID)
    assert len(items["DOCUMENT"]) == 1 and items["DOCUMENT"][0]["status"] == owner["status"]
    assert len(items["PREDICTION#"]) == 1
    assert {u["source"]: u["status"] for u in items["UPLOAD#"]} == {
        f"s3://{BUCKET}/incoming/memo.pdf": owner["status"],
        f"s3://{BUCKET}/incoming/copy.pdf": "DUPLICATE",
    }
    assert len(_all_documents()) == 1


def test_handlers_a_document_orphaned_past_the_lease_is_taken_over(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from docflow.adapters.dynamodb import DynamoRecordStore
    from docflow.records import DocumentRecord
    from docflow.values import Status, utcnow

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    # An execution that timed out or was aborted 5 minutes ago left the document PROCESSING
    then = utcnow() - timedelta(minutes=5)
    DynamoRecordStore(TABLE).put_document(
        DocumentRecord(
            document_id=MEMO_ID,
            status=Status.PROCESSING,
            source=f"s3://{BUCKET}/incoming/memo.pdf",
            version_id=event["detail"]["object"]["version-id"],
            owner="arn:aws:states:us-east-1:123456789012:execution:pipeline:gone",
            created_at=then,
            updated_at=then,
        )
    )
    # Within the lease it may still be running: a delivery reports it in progress
    monkeypatch.setenv("DOCFLOW_PROCESSING_LEASE_SECONDS", "3600")
    _fresh_settings()
    waiting = _validate(event)
    assert waiting["replay"] is True and waiting["status"] == "PROCESSING"
    # Past the lease it is an orphan: the next delivery takes it over and finishes it
    monkeypatch.setenv("DOCFLOW_PROCESSING_LEASE_SECONDS", "60")
    _fresh_settings()
    done = _rest(_validate(event))
    assert done["replay"] is False and done["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert _items(MEMO_ID)["DOCUMENT"][0]["status"] == done["status"]


def _fresh_settings() -> None:
    from docflow.context import get_context
    from docflow.settings import get_settings

    get_settings.cache_clear()
    get_context.cache_clear()


def test_handlers_a_lost_reply_to_the_takeover_of_an_orphan_is_not_taken_for_another_delivery(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from docflow.adapters.dynamodb import DynamoRecordStore
    from docflow.records import DocumentRecord
    from docflow.values import Status, utcnow

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    then = utcnow() - timedelta(hours=4)  # past the 3-hour lease: an orphan
    DynamoRecordStore(TABLE).put_document(
        DocumentRecord(
            document_id=MEMO_ID, status=Status.PROCESSING, source="s3://x/gone.pdf", created_at=then, updated_at=then
        )
    )
    _lose_first_reply(monkeypatch, "restart_document")
    state = _validate(_owned(event, "one"))  # the takeover's retry finds the record this run just wrote
    assert state["proceed"] is True and state["replay"] is False
    assert _rest(state)["status"] in ("CLASSIFIED", "NEEDS_REVIEW")


def test_handlers_a_failed_retry_keeps_the_label_and_a_label_set_while_classifying_survives(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow.adapters.dynamodb import DynamoRecordStore
    from docflow.handlers import record_failure

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = _event("incoming/memo.pdf")
    failed = _validate(event)
    failed["error"] = {"Error": "OcrTimeoutError", "Cause": "tesseract took too long"}
    assert record_failure.handler(failed, FakeLambdaContext())["status"] == "FAILED"
    store = DynamoRecordStore(TABLE)
    first = decide(store, MEMO_ID, "email")
    assert first is not None and first.status == "FAILED"
    # The user's retry takes the FAILED record over: its label and creation time stay
    retry = _validate(event)
    assert retry["proceed"] is True
    restarted = store.get_document(MEMO_ID)
    assert restarted is not None and restarted.status == "PROCESSING"
    assert restarted.label == "email" and restarted.created_at == first.created_at
    # A label set while Classify runs (after it read the record, before it wrote its outcome) survives
    original = DynamoRecordStore.add_prediction

    def label_meanwhile(self: DynamoRecordStore, prediction: Any) -> None:
        assert decide(self, MEMO_ID, "resume") is not None
        original(self, prediction)

    monkeypatch.setattr(DynamoRecordStore, "add_prediction", label_meanwhile)
    done = _rest(retry)
    assert done["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    document = _items(MEMO_ID)["DOCUMENT"][0]
    # a label is a person's decision: what the model would have sent to the queue is settled by it
    settled = "REVIEWED" if done["status"] == "NEEDS_REVIEW" else done["status"]
    assert document["status"] == settled and document["label"] == "resume"
    assert document["predicted_class"] == done["prediction"]["predicted_class"]
