"""The Lambda handlers, chained as the state machine chains them, against S3 and DynamoDB (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from docflow.samples import LETTER, MEMO, render_page, text_pdf
from tests.aws_fixtures import BUCKET, EVENT, TABLE, create_resources, object_created

__all__ = ["EVENT", "FakeLambdaContext"]

pytestmark = pytest.mark.integration


@dataclass
class FakeLambdaContext:
    function_name: str = "docflow-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:docflow-test"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    with mock_aws():
        create_resources()
        yield boto3.client("s3", region_name="us-east-1")


def _event(key: str) -> dict[str, Any]:
    """S3's event for the object now under key (a versioned bucket: the event names its version)."""
    return object_created(key)


def _record(document_id: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(TABLE)
    return table.get_item(Key={"pk": document_id, "sk": "DOCUMENT"})["Item"]


def _run(event: dict[str, Any]) -> dict[str, Any]:
    """The state machine's flow, one handler per task."""
    from docflow.handlers import classify, extract_text, record_outcome, validate

    ctx = FakeLambdaContext()
    state = validate.handler(event, ctx)
    if not state["proceed"]:
        return record_outcome.handler(state, ctx)
    state = extract_text.handler(state, ctx)
    return classify.handler(state, ctx)


def test_pdf_with_text_layer_is_classified(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a memo PDF put under incoming/
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=text_pdf([MEMO]))
    # When the S3 event runs through the handlers
    state = _run(_event("incoming/memo.pdf"))
    # Then the record is final, the text came from the PDF's text layer, and the result file exists
    assert state["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert state["text_source"] == "pdf_text"
    assert state["ref"]["source"] == f"s3://{BUCKET}/incoming/memo.pdf"
    record = _record(state["document_id"])
    assert record["status"] == state["status"]
    assert record["predicted_class"] == state["prediction"]["predicted_class"]
    result = json.loads(aws.get_object(Bucket=BUCKET, Key=f"results/{state['document_id']}.json")["Body"].read())
    assert result["prediction"]["predicted_class"] == state["prediction"]["predicted_class"]
    # And the handlers emitted EMF metrics with the terminal status
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("DocumentsProcessed") == [1.0] or m.get("DocumentsProcessed") == 1.0 for m in emf)


def test_scanned_letter_is_ocrd_and_url_encoded_keys_work(aws: Any) -> None:
    import io

    buf = io.BytesIO()
    render_page(LETTER).save(buf, "PNG")
    aws.put_object(Bucket=BUCKET, Key="incoming/my letter.png", Body=buf.getvalue())
    state = _run(_event("incoming/my letter.png"))  # its event carries the key URL-encoded: my+letter.png
    assert state["text_source"] == "ocr"
    assert state["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert _record(state["document_id"])["status"] == state["status"]


def test_hostile_file_is_rejected_with_reason(aws: Any) -> None:
    aws.put_object(Bucket=BUCKET, Key="incoming/invoice.pdf", Body=b"<html><body>hi</body></html>")
    state = _run(_event("incoming/invoice.pdf"))
    assert state["status"] == "REJECTED"
    record = _record(state["document_id"])
    assert record["status"] == "REJECTED"
    assert record["code"] == "UNSUPPORTED_TYPE"
    assert "HTML" in record["reason"]


def test_same_content_under_another_name_is_duplicate(aws: Any) -> None:
    pdf = text_pdf([MEMO])
    aws.put_object(Bucket=BUCKET, Key="incoming/a.pdf", Body=pdf)
    aws.put_object(Bucket=BUCKET, Key="incoming/b.pdf", Body=pdf)
    first = _run(_event("incoming/a.pdf"))
    second = _run(_event("incoming/b.pdf"))
    again = _run(_event("incoming/a.pdf"))  # the first event delivered twice
    assert second["status"] == "DUPLICATE"
    assert second["duplicate_of"] == first["document_id"]
    assert again["replay"] is True and again["status"] == first["status"]
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(TABLE)
    items = table.query(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": first["document_id"]})
    kinds = sorted(i["sk"].split("#")[0] for i in items["Items"])
    # one document, two uploads, one prediction: the redelivery added nothing
    assert kinds == ["DOCUMENT", "PREDICTION", "UPLOAD", "UPLOAD"]
    assert _record(first["document_id"])["status"] == first["status"]


def test_record_failure_marks_failed_with_cause(aws: Any) -> None:
    from docflow.handlers import record_failure, validate

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=text_pdf([MEMO]))
    state = validate.handler(_event("incoming/memo.pdf"), FakeLambdaContext())
    # Given the Catch's output: the failed task's input plus $.error
    state["error"] = {
        "Error": "OcrTimeoutError",
        "Cause": json.dumps({"errorMessage": "page 1 took longer than 120 s", "errorType": "OcrTimeoutError"}),
    }
    out = record_failure.handler(state, FakeLambdaContext())
    assert out["status"] == "FAILED"
    record = _record(state["document_id"])
    assert record["status"] == "FAILED"
    assert record["code"] == "OcrTimeoutError"
    assert record["reason"] == "page 1 took longer than 120 s"
    # The blob is kept for a re-drive
    assert aws.head_object(Bucket=BUCKET, Key="incoming/memo.pdf")["ContentLength"] > 0


@pytest.mark.parametrize("setting", [None, "0.01"])
def test_review_threshold_is_the_models_calibrated_one_unless_set(
    aws: Any, monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    from docflow.context import get_context
    from docflow.settings import get_settings

    if setting is not None:
        monkeypatch.setenv("DOCFLOW_REVIEW_THRESHOLD", setting)
    get_settings.cache_clear()
    get_context.cache_clear()
    model = get_context().classifier()
    calibrated = model.config.review_threshold
    assert calibrated is not None and calibrated > 0.5  # the default model ships its calibration
    # A page of words that belong to no class: its confidence is low.
    aws.put_object(Bucket=BUCKET, Key="incoming/vague.pdf", Body=text_pdf(["Thursday. Blue green seven. Thank you."]))
    state = _run(_event("incoming/vague.pdf"))
    confidence = state["prediction"]["confidence"]
    assert 0.01 < confidence < calibrated
    if setting is None:
        assert state["status"] == "NEEDS_REVIEW"
        assert state["reason"].endswith(f"below the review threshold {calibrated:.2f}")
    else:
        assert state["status"] == "CLASSIFIED" and state["reason"] is None
