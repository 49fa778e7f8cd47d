"""The API's Lambda entry point with real API Gateway REST proxy events, on S3 and DynamoDB (moto).

The upload event is a binary multipart body, base64-encoded with isBase64Encoded true, as API Gateway sends it
when multipart/form-data is one of the API's binary media types.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
from moto import mock_aws

from docflow.samples import MEMO, text_pdf
from tests.aws_fixtures import BUCKET, TABLE, create_resources, object_created

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).parents[1] / "events"
KEY = "test-api-key-7f3a9c"  # the x-api-key the event files carry
REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


@dataclass
class FakeLambdaContext:
    function_name: str = "docflow-api-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:docflow-api-test"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> Iterator[Any]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    monkeypatch.setenv("DOCFLOW_MODEL_DIR", str(tiny_model))
    monkeypatch.setenv("DOCFLOW_API_KEY", KEY)  # the app checks too when a key is set
    from docflow.api.config import get_api_settings
    from docflow.api.uploads import _s3_presigner

    get_api_settings.cache_clear()
    _s3_presigner.cache_clear()
    with mock_aws():
        create_resources()
        yield boto3.client("s3", region_name="us-east-1")
    get_api_settings.cache_clear()
    _s3_presigner.cache_clear()


def _event(name: str, **replace: str) -> dict[str, Any]:
    text = (EVENTS / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    event: dict[str, Any] = json.loads(text)
    return event


def _invoke(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    from docflow.handlers.api import handler

    response = handler(event, FakeLambdaContext())
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = values[0]
    return response["statusCode"], headers, json.loads(body)


def _pipeline(key: str) -> dict[str, Any]:
    """What the EventBridge rule and the state machine do with the object the API wrote."""
    from docflow.handlers import classify, extract_text, record_outcome, validate

    s3_event = object_created(key)
    ctx = FakeLambdaContext()
    state = validate.handler(s3_event, ctx)
    if not state["proceed"]:
        return record_outcome.handler(state, ctx)
    return classify.handler(extract_text.handler(state, ctx), ctx)


def test_health_event_needs_no_key_and_carries_the_request_id(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, headers, body = _invoke(_event("apigw_health.json"))
    assert status == 200, body
    assert body["status"] == "ok" and body["backend"] == "aws"
    assert body["stores"] == {"records": True, "blobs": True} and body["model_loaded"] is True
    assert headers["x-request-id"] == REQUEST_ID
    # powertools: the API Gateway request id is the logs' correlation id, and the metrics were flushed (EMF)
    from docflow.powertools import logger

    assert logger.get_correlation_id() == REQUEST_ID
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("ApiRequests") in (1.0, [1.0]) for m in emf), emf


def test_binary_multipart_upload_lands_in_incoming_and_the_pipeline_finishes_it(aws: Any) -> None:
    event = _event("apigw_upload_document.json")
    assert event["isBase64Encoded"] is True
    pdf = text_pdf([MEMO])
    assert pdf in base64.b64decode(event["body"])  # the event carries the real file
    # When API Gateway hands the base64 multipart body to the function
    status, _, body = _invoke(event)
    # Then the upload is accepted under its content hash and written under incoming/ (nothing else runs here)
    assert status == 202, body
    document_id = hashlib.sha256(pdf).hexdigest()
    assert body["document_id"] == document_id and body["media_type"] == "application/pdf"
    keys = [o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("incoming/") and keys[0].endswith("/memo.pdf")
    assert aws.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read() == pdf
    # And a poll right away finds it RECEIVED
    get = _event("apigw_get_document.json", DOCUMENT_ID=document_id)
    status, _, received = _invoke(get)
    assert status == 200 and received["status"] == "RECEIVED" and received["terminal"] is False

    # When the S3 trigger runs the pipeline on that object
    state = _pipeline(keys[0])
    # Then the API reports the pipeline's outcome, and the upload record was replaced, not duplicated
    status, _, done = _invoke(get)
    assert status == 200
    assert done["status"] == state["status"] and done["terminal"] is True
    assert done["prediction"]["predicted_class"] == state["prediction"]["predicted_class"]
    assert [u["status"] for u in done["uploads"]] == [state["status"]]
    assert done["uploads"][0]["source"] == f"s3://{BUCKET}/{keys[0]}"
    # and the history is served under both paths
    for path in (f"/documents/{document_id}/predictions", f"/prediction/history/{document_id}"):
        status, _, history = _invoke(_event("apigw_get_document.json", **{"/documents/DOCUMENT_ID": path}))
        assert status == 200 and len(history["predictions"]) == 1


def test_an_upload_whose_validation_fails_ends_failed_not_received(aws: Any) -> None:
    from docflow.handlers import record_failure

    status, _, body = _invoke(_event("apigw_upload_document.json"))
    assert status == 202, body
    [key] = [o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    # Validate failed past its retries: the Catch hands RecordFailure the S3 event with $.error
    failed_event = {**object_created(key), "error": {"Error": "TransientError", "Cause": "S3 throttled"}}
    assert record_failure.handler(failed_event, FakeLambdaContext())["status"] == "FAILED"
    # The client polling its document sees the failure, and one upload record: the RECEIVED one is replaced
    status, _, doc = _invoke(_event("apigw_get_document.json", DOCUMENT_ID=body["document_id"]))
    assert status == 200 and doc["status"] == "FAILED" and doc["terminal"] is True
    assert [u["status"] for u in doc["uploads"]] == ["FAILED"]


def test_predict_text_event_answers_with_the_seed_fields(aws: Any) -> None:
    status, _, body = _invoke(_event("apigw_predict_text.json"))
    assert status == 200, body
    assert body["success"] is True and body["predicted_class"] == "resume"
    assert set(body["all_scores"]) == {"email", "news_article", "resume"}
    assert {"confidence_score", "is_confident", "model_name", "model_version"} <= body.keys()


def test_missing_or_wrong_key_is_refused_without_data(aws: Any) -> None:
    event = _event("apigw_get_document.json", DOCUMENT_ID="0" * 64)
    for headers in (event["headers"], event["multiValueHeaders"]):
        headers.pop("x-api-key")
    status, _, body = _invoke(event)
    assert status == 401 and set(body) == {"error", "detail", "request_id"}
    wrong = _event("apigw_predict_text.json", **{KEY: "not-the-key"})
    status, _, body = _invoke(wrong)
    assert status == 403 and body["error"] == "forbidden" and "predicted_class" not in body


def test_oversized_body_is_413_pointing_to_upload_url(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow.api.config import get_api_settings

    monkeypatch.setenv("DOCFLOW_API_MAX_UPLOAD_BYTES", "500")
    get_api_settings.cache_clear()
    status, _, body = _invoke(_event("apigw_upload_document.json"))
    assert status == 413 and body["error"] == "payload_too_large"
    assert "upload-url" in body["detail"]
    assert aws.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_upload_url_is_an_s3_presigned_put_that_works(aws: Any) -> None:
    import requests

    pdf = text_pdf([MEMO, MEMO.replace("MEMORANDUM", "MEMO")])
    digest = hashlib.sha256(pdf).hexdigest()
    event = _event("apigw_predict_text.json", **{"/predict/text": "/documents/upload-url"})
    event["body"] = json.dumps({"file_name": "big scan.pdf", "sha256": digest})
    status, _, body = _invoke(event)
    assert status == 200, body
    url = urlparse(body["url"])
    query = parse_qs(url.query)
    assert BUCKET in url.netloc + url.path and url.path.endswith("/big_scan.pdf")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and "X-Amz-Signature" in query
    assert body["key"].startswith("incoming/") and body["document_id"] == digest
    assert body["headers"] == {"x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(digest)).decode()}
    # the client PUTs to it, with the headers it was given
    put = requests.put(body["url"], data=pdf, headers=body["headers"], timeout=10)
    assert put.status_code == 200, put.text
    assert aws.get_object(Bucket=BUCKET, Key=body["key"])["Body"].read() == pdf


def test_docs_are_served_under_the_stage(aws: Any) -> None:
    from docflow.handlers.api import handler

    event = _event("apigw_health.json", **{'"/health"': '"/docs"', '"/prod/health"': '"/prod/docs"'})
    response = handler(event, FakeLambdaContext())
    assert response["statusCode"] == 200
    html = response["body"] if not response["isBase64Encoded"] else base64.b64decode(response["body"]).decode()
    assert "/prod/openapi.json" in html  # the browser fetches the schema through the stage


def test_handler_is_named_and_its_cold_start_loads_no_heavy_library() -> None:
    code = (
        "import sys; import docflow.handlers.api as m; "
        "heavy = sorted(n for n in ('onnxruntime', 'sklearn', 'torch', 'mlflow', 'tesserocr', 'pypdfium2', 'PIL', "
        "'docflow_training', 'numpy') if n in sys.modules); "
        "print(m.handler.__name__, heavy)"
    )
    env = {"POWERTOOLS_TRACE_DISABLED": "1", "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert out.stdout.split() == ["handler", "[]"], out.stdout + out.stderr


def _list(**params: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    event = _event("apigw_get_document.json", **{"documents/DOCUMENT_ID": "documents"})
    event["queryStringParameters"] = params
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()}
    return _invoke(event)


def test_listing_pages_on_dynamodb_and_a_tampered_cursor_is_the_clients_error(aws: Any) -> None:
    from docflow.adapters.dynamodb import DynamoRecordStore
    from docflow.records import DocumentRecord
    from docflow.values import Status

    store = DynamoRecordStore(TABLE)
    ids = {c * 64 for c in "abc"}
    for document_id in ids:
        store.put_document(DocumentRecord(document_id=document_id, status=Status.CLASSIFIED, source="up"))
    # The store's own cursors page through, with and without a status (the by-status index's sort key)
    for params in ({}, {"status": "CLASSIFIED"}):
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(5):
            status, _, page = _list(limit="2", **params, **({"cursor": cursor} if cursor else {}))
            assert status == 200, page
            seen += [d["document_id"] for d in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == sorted(ids), params
    # A cursor the API wraps well but that is no position in the listing is a 422, not a retryable 503
    tampered = ["[1]", "1", '"pk"', '{"pk": 1, "sk": "DOCUMENT"}', '{"pk": "x"}', '{"pk": "x", "sk": "DOCUMENT"}']
    for raw in tampered:
        wrapped = base64.urlsafe_b64encode(json.dumps({"c": raw}).encode()).decode().rstrip("=")
        status, headers, body = _list(status="CLASSIFIED", cursor=wrapped)
        assert (status, body["error"]) == (422, "invalid_cursor"), (raw, body)
        assert "retry-after" not in headers
    status, _, body = _list(cursor=base64.urlsafe_b64encode(b'{"c": "[1]"}').decode().rstrip("="))
    assert (status, body["error"]) == (422, "invalid_cursor")
