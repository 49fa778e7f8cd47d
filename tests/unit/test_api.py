"""The REST API through FastAPI's TestClient: every endpoint, on the local stores in a tmp DOCFLOW_HOME, with a
tiny model trained from tests/fixtures/corpus (classes email, news_article, resume)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from docflow.api.uploads import UploadGrant, safe_file_name, sign_grant, verify_grant
from docflow.api.worker import LocalWorkers, PendingUpload
from docflow.context import build_context, get_context
from docflow.records import DocumentRecord, UploadRecord
from docflow.samples import LETTER, MEMO, render_page, text_pdf
from docflow.settings import Settings
from docflow.values import Status

pytestmark = pytest.mark.unit

KEY = "test-key-0123456789"
RESUME = "CURRICULUM VITAE\nEducation: B.Sc. Chemistry\nExperience: research assistant, 1988-1992\nReferences available"


def _upload(client: TestClient, data: bytes, name: str = "memo.pdf", mime: str = "application/pdf") -> Any:
    return client.post("/documents", files={"file": (name, data, mime)})


def _wait_terminal(client: TestClient, document_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/documents/{document_id}").json()
        if body.get("terminal"):
            return body
        assert time.monotonic() < deadline, f"document {document_id} not terminal: {body}"
        time.sleep(0.05)


def _png(text: str) -> bytes:
    import io

    buf = io.BytesIO()
    render_page(text).save(buf, "PNG")
    return buf.getvalue()


def _assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "detail"}, body
    if code:
        assert body["error"] == code, body
    return body


# -- health, model, text ------------------------------------------------------------------------------------


def test_health_reports_model_and_stores(client: TestClient, tiny_model: Path) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["backend"] == "local"
    assert body["model_loaded"] is True
    assert body["model_version"] == (tiny_model / "config.json").read_text().split('"version": "')[1].split('"')[0]
    assert body["stores"] == {"records": True, "blobs": True}
    assert response.headers["x-request-id"]


def test_health_without_a_model_is_503_degraded(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(DOCFLOW_MODEL_DIR=str(tmp_path / "no-model"))
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["model_loaded"] is False and response.json()["status"] == "degraded"
    # and an endpoint that needs the model says so, as a 503 with a JSON body, not a 500
    _assert_error(client.post("/predict/text", json={"text": "hello"}), 503, "model_unavailable")


def test_model_lists_champion_classes_and_metrics(client: TestClient, tiny_model: Path) -> None:
    body = client.get("/model").json()
    assert body["classes"] == ["email", "news_article", "resume"]
    assert body["model_name"] and body["model_version"]
    assert 0 <= body["metrics"]["accuracy"] <= 1
    assert set(body["metrics"]["per_class"]) == {"email", "news_article", "resume"}
    # No DOCFLOW_REVIEW_THRESHOLD: the threshold calibrated for this model when it was trained.
    calibrated = json.loads((tiny_model / "config.json").read_text())["review_threshold"]
    assert body["review_threshold"] == calibrated


def test_review_threshold_setting_overrides_the_models(make_client: Callable[..., TestClient]) -> None:
    client = make_client(DOCFLOW_REVIEW_THRESHOLD="0.999")
    assert client.get("/model").json()["review_threshold"] == 0.999
    body = client.post("/predict/text", json={"text": RESUME}).json()
    assert body["predicted_class"] == "resume" and body["confidence_score"] < 0.999
    assert body["is_confident"] is False


def test_predict_text_keeps_the_seed_fields(client: TestClient) -> None:
    plain = client.post("/predict/text", json={"text": RESUME})
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert {
        "success",
        "predicted_class",
        "confidence_score",
        "is_confident",
        "model_name",
        "model_version",
        "all_scores",
    } <= body.keys()
    assert body["success"] is True and body["all_scores"] is None
    assert body["predicted_class"] == "resume"
    threshold = client.get("/model").json()["review_threshold"]
    assert body["is_confident"] == (body["confidence_score"] >= threshold)
    scored = client.post("/predict/text", json={"text": RESUME, "return_all_scores": True}).json()
    assert set(scored["all_scores"]) == {"email", "news_article", "resume"}
    assert abs(sum(scored["all_scores"].values()) - 1) < 1e-4
    assert scored["all_scores"]["resume"] == pytest.approx(scored["confidence_score"])


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"text": ""},
        {"text": "   \n"},
        {"text": 3},
        {"text": "x", "return_all_scores": "maybe"},
        {"text": "x" * 1_000_001},
    ],
)
def test_predict_text_invalid_body_is_422_with_field_errors(client: TestClient, payload: dict[str, Any]) -> None:
    body = _assert_error(client.post("/predict/text", json=payload), 422, "invalid_request")
    assert body["errors"] and all({"loc", "msg", "type"} == set(e) for e in body["errors"])


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post("/predict/text", content=b"{not json", headers={"content-type": "application/json"})
    _assert_error(response, 422, "invalid_request")


# -- documents: upload, poll, history, label, re-classify -------------------------------------------------------


def test_upload_poll_history_label_and_reclassify(client: TestClient) -> None:
    pdf = text_pdf([MEMO])
    # When a document is uploaded
    accepted = _upload(client, pdf)
    # Then it is accepted for asynchronous processing, under its content hash
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["document_id"] == hashlib.sha256(pdf).hexdigest()
    assert body["status"] == "RECEIVED" and body["already_known"] is False
    assert accepted.headers["location"] == body["status_url"] == f"/documents/{body['document_id']}"
    document_id = body["document_id"]
    # And polling ends in a terminal status with the pipeline's outcome
    done = _wait_terminal(client, document_id)
    assert done["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert done["text_source"] == "pdf_text" and done["pages"] == 1
    assert done["prediction"]["predicted_class"] in ("email", "news_article", "resume")
    assert set(done["timings"]) >= {"validate", "extract", "classify"}
    assert [u["status"] for u in done["uploads"]] == [done["status"]]
    assert done["uploads"][0]["source"].startswith("incoming/") and done["uploads"][0]["source"].endswith("/memo.pdf")

    # The listing shows it under its status
    listed = client.get("/documents", params={"status": done["status"]}).json()
    assert [d["document_id"] for d in listed["items"]] == [document_id]
    assert client.get("/documents", params={"status": "FAILED"}).json()["items"] == []

    # The history has the one prediction, under both paths
    history = client.get(f"/documents/{document_id}/predictions").json()
    assert len(history["predictions"]) == 1
    assert client.get(f"/prediction/history/{document_id}").json() == history

    # A label outside the model's classes is refused; a valid one is stored on the record
    _assert_error(client.put(f"/documents/{document_id}/label", json={"label": "invoice"}), 422, "unknown_label")
    labelled = client.put(f"/documents/{document_id}/label", json={"label": "email"})
    assert labelled.status_code == 200 and labelled.json()["label"] == "email"
    assert client.get(f"/documents/{document_id}").json()["label"] == "email"

    # Re-classifying records a second prediction, keeps the label, and answers with the seed's fields
    again = client.post(f"/predict/document/{document_id}", params={"return_all_scores": True})
    assert again.status_code == 200, again.text
    assert again.json()["document_id"] == document_id and again.json()["all_scores"]
    assert again.json()["predicted_class"] == done["prediction"]["predicted_class"]
    assert len(client.get(f"/documents/{document_id}/predictions").json()["predictions"]) == 2
    assert client.get(f"/documents/{document_id}").json()["label"] == "email"


def test_labelling_a_document_still_processing_keeps_the_pipelines_status(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow.api import serving

    records = get_context().records
    document_id = "c" * 64
    records.put_document(DocumentRecord(document_id=document_id, status=Status.PROCESSING, source="up"))
    load = serving.classifier

    def pipeline_finishes_while_the_model_loads(ctx: Any) -> Any:
        seen = records.get_document(document_id)
        assert seen is not None
        records.put_document(seen.model_copy(update={"status": Status.CLASSIFIED, "predicted_class": "email"}))
        return load(ctx)

    monkeypatch.setattr(serving, "classifier", pipeline_finishes_while_the_model_loads)
    # When a label is set on a document the pipeline finishes meanwhile
    labelled = client.put(f"/documents/{document_id}/label", json={"label": "resume"})
    # Then the label is stored and the pipeline's outcome is not put back to PROCESSING
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["label"] == "resume" and labelled.json()["status"] == "CLASSIFIED"
    stored = records.get_document(document_id)
    assert stored is not None and (stored.status, stored.label) == (Status.CLASSIFIED, "resume")


def test_same_content_again_is_known_and_ends_duplicate(client: TestClient) -> None:
    pdf = text_pdf([RESUME])
    first = _upload(client, pdf, "cv.pdf").json()
    _wait_terminal(client, first["document_id"])
    second = _upload(client, pdf, "copy of cv.pdf").json()
    assert second["already_known"] is True and second["document_id"] == first["document_id"]
    assert second["file_name"] == "copy_of_cv.pdf"
    deadline = time.monotonic() + 30
    while True:
        uploads = client.get(f"/documents/{first['document_id']}").json()["uploads"]
        if all(Status(u["status"]).terminal for u in uploads):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(uploads) == 2 and "DUPLICATE" in {u["status"] for u in uploads}
    duplicate = next(u for u in uploads if u["status"] == "DUPLICATE")
    assert duplicate["duplicate_of"] == first["document_id"]


def test_corrupt_upload_ends_rejected_and_cannot_be_reclassified(client: TestClient) -> None:
    truncated = _png(LETTER)[:3000]
    accepted = _upload(client, truncated, "scan.png", "image/png")
    assert accepted.status_code == 202
    done = _wait_terminal(client, accepted.json()["document_id"])
    assert done["status"] == "REJECTED" and done["code"] == "CORRUPT" and done["reason"]
    refused = client.post(f"/predict/document/{done['document_id']}")
    _assert_error(refused, 409, "not_classifiable")


def test_upload_refusals(make_client: Callable[..., TestClient], docflow_home: Path) -> None:
    client = make_client(DOCFLOW_API_MAX_UPLOAD_BYTES="2000")
    # unsupported type: sniffed from the content, whatever the declared type
    html = _assert_error(_upload(client, b"<html><body>invoice</body></html>", "invoice.pdf"), 415)
    assert "HTML" in html["detail"]
    _assert_error(_upload(client, b"", "empty.pdf"), 422, "empty_file")
    # too large for this endpoint: 413, pointing to the upload URL
    big = _assert_error(_upload(client, text_pdf([MEMO]) + b" " * 2000), 413, "payload_too_large")
    assert "/documents/upload-url" in big["detail"]
    # a declared Content-Length over the cap is refused before the body is read
    response = client.post("/predict/text", content=b"{}", headers={"content-length": "999999999"})
    _assert_error(response, 413, "payload_too_large")
    # no file field
    _assert_error(client.post("/documents", data={"x": "1"}), 422, "invalid_request")
    _assert_error(client.post("/documents"), 422, "invalid_request")
    # nothing of the refused uploads was stored
    assert not list((docflow_home / "blobs").rglob("incoming/*/*"))


def test_unknown_and_malformed_ids(client: TestClient) -> None:
    unknown = "0" * 64
    for method, path in [
        ("GET", f"/documents/{unknown}"),
        ("GET", f"/documents/{unknown}/predictions"),
        ("GET", f"/prediction/history/{unknown}"),
        ("POST", f"/predict/document/{unknown}"),
    ]:
        _assert_error(client.request(method, path), 404, "not_found")
    _assert_error(client.put(f"/documents/{unknown}/label", json={"label": "email"}), 404, "not_found")
    _assert_error(client.get("/documents/not-a-hash"), 422, "invalid_request")
    _assert_error(client.get("/no/such/route"), 404, "not_found")
    _assert_error(client.delete("/documents"), 405)


def test_listing_pages_with_an_opaque_cursor(client: TestClient) -> None:
    ids = set()
    for i in range(3):
        accepted = _upload(client, text_pdf([f"{RESUME}\nnumber {i}"]), f"cv{i}.pdf").json()
        ids.add(accepted["document_id"])
    for document_id in ids:
        _wait_terminal(client, document_id)
    first = client.get("/documents", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get("/documents", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert second["next_cursor"] is None
    assert {d["document_id"] for d in first["items"] + second["items"]} == ids
    for bad in ("!!!", "abc", "eyJ4IjogMX0"):  # not base64; not JSON; JSON without the cursor
        _assert_error(client.get("/documents", params={"cursor": bad}), 422, "invalid_cursor")
    _assert_error(client.get("/documents", params={"status": "DONE"}), 422, "invalid_request")
    _assert_error(client.get("/documents", params={"limit": 0}), 422, "invalid_request")
    for upload_only in ("RECEIVED", "DUPLICATE"):  # an upload's statuses: listing by them was always empty
        _assert_error(client.get("/documents", params={"status": upload_only}), 422, "invalid_status")


# -- synchronous upload-and-predict --------------------------------------------------------------------------


def test_upload_and_predict_answers_now_and_stores_nothing(client: TestClient, docflow_home: Path) -> None:
    pdf = text_pdf([RESUME])
    response = client.post(
        "/upload-and-predict", files={"file": ("cv.pdf", pdf, "application/pdf")}, data={"return_all_scores": "true"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["predicted_class"] == "resume"
    assert body["document_id"] == hashlib.sha256(pdf).hexdigest()
    assert body["text_source"] == "pdf_text" and body["pages"] == 1 and body["text_chars"] > 50
    assert set(body["all_scores"]) == {"email", "news_article", "resume"}
    # seed style: options as query parameters
    seed_style = client.post(
        "/upload-and-predict?ocr_language=eng&return_all_scores=false",
        files={"file": ("cv.pdf", pdf, "application/pdf")},
    )
    assert seed_style.status_code == 200 and seed_style.json()["all_scores"] is None
    _assert_error(client.get(f"/documents/{body['document_id']}"), 404)


def test_upload_and_predict_bounds_each_page_by_the_request_budget(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow.domain import extraction

    seen: list[float] = []
    real = extraction.extract_text

    def recording(data: bytes, media_type: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(options.timeout_seconds)
        return real(data, media_type, options, *args, **kwargs)

    monkeypatch.setattr(extraction, "extract_text", recording)
    client = make_client(DOCFLOW_API_SYNC_TIMEOUT="7")
    response = client.post("/upload-and-predict", files={"file": ("cv.pdf", text_pdf([RESUME]), "application/pdf")})
    assert response.status_code == 200, response.text
    assert seen == [7.0]  # not the pipeline's 120 s per page: a page cannot run on long after the 504


def test_upload_and_predict_refusals(make_client: Callable[..., TestClient]) -> None:
    client = make_client(DOCFLOW_API_SYNC_MAX_PAGES="1")

    def post(data: bytes, name: str = "a.pdf", **form: str) -> Any:
        return client.post("/upload-and-predict", files={"file": (name, data, "application/octet-stream")}, data=form)

    _assert_error(post(b"GIF89a" + b"\0" * 64, "a.gif"), 415, "unsupported_media_type")
    _assert_error(post(_png(LETTER)[:3000], "a.png"), 422, "corrupt")
    pages = _assert_error(post(text_pdf([MEMO, RESUME])), 413, "too_many_pages")
    assert "POST /documents" in pages["detail"]
    _assert_error(post(text_pdf([MEMO]), ocr_language="eng;rm -rf"), 422, "invalid_request")
    # a language without installed traineddata: refused before any OCR runs
    missing = _assert_error(post(_png(LETTER), "a.png", ocr_language="xyz"), 422, "unsupported_language")
    assert "xyz" in missing["detail"]


# -- upload URLs (the local stand-in for S3 presigned PUTs) -------------------------------------------------


def test_upload_url_put_roundtrip(client: TestClient) -> None:
    pdf = text_pdf([MEMO, RESUME])
    digest = hashlib.sha256(pdf).hexdigest()
    grant = client.post("/documents/upload-url", json={"file_name": "big memo.pdf", "sha256": digest})
    assert grant.status_code == 200, grant.text
    body = grant.json()
    assert body["method"] == "PUT" and body["document_id"] == digest
    assert body["key"].startswith("incoming/") and body["key"].endswith("/big_memo.pdf")
    path = body["url"].removeprefix("http://testserver")
    # bytes other than the declared ones are refused
    _assert_error(client.put(path, content=b"%PDF-1.4 other bytes"), 400, "checksum_mismatch")
    # a tampered token is refused
    _assert_error(client.put(path[:-3] + "AAA", content=pdf), 403, "forbidden")
    put = client.put(path, content=pdf)
    assert put.status_code == 202, put.text
    assert put.json()["document_id"] == digest
    done = _wait_terminal(client, digest)
    assert done["pages"] == 2 and done["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    _assert_error(client.post("/documents/upload-url", json={"file_name": ""}), 422)
    _assert_error(client.post("/documents/upload-url", json={"file_name": "a", "sha256": "xyz"}), 422)


def test_an_upload_url_takes_one_upload(client: TestClient, docflow_home: Path) -> None:
    pdf = text_pdf([MEMO])
    grant = client.post("/documents/upload-url", json={"file_name": "memo.pdf"})  # no sha256 in the grant
    assert grant.status_code == 200, grant.text
    path = grant.json()["url"].removeprefix("http://testserver")
    first = client.put(path, content=pdf)
    assert first.status_code == 202, first.text
    # a second PUT would overwrite the file the first job reads, under the same upload_id: refused
    body = _assert_error(client.put(path, content=text_pdf([RESUME])), 409, "upload_url_used")
    assert "new one" in body["detail"]
    _assert_error(client.put(path, content=pdf), 409, "upload_url_used")
    done = _wait_terminal(client, first.json()["document_id"])
    assert done["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert [u["status"] for u in done["uploads"]] == [done["status"]]
    # the worker drops its journal entry just after the record turns terminal: poll, on a busy machine
    queue, deadline = docflow_home / "api" / "queue", time.monotonic() + 10
    while list(queue.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(queue.glob("*")), "a journal entry or start marker is left"


def test_a_used_upload_url_marker_is_swept_once_its_grant_has_expired(client: TestClient, docflow_home: Path) -> None:
    spool = docflow_home / "api" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    expired, live = spool / "old.used", spool / "live.used"
    expired.touch()
    live.touch()
    os.utime(expired, (time.time() - 10, time.time() - 10))
    os.utime(live, (time.time() + 3600, time.time() + 3600))
    grant = client.post("/documents/upload-url", json={"file_name": "memo.pdf"})
    put = client.put(grant.json()["url"].removeprefix("http://testserver"), content=text_pdf([MEMO]))
    assert put.status_code == 202, put.text
    assert not expired.exists() and live.exists()
    assert (spool / f"{put.json()['upload_id']}.used").exists()
    _wait_terminal(client, put.json()["document_id"])


def test_upload_grants_expire_and_resist_tampering() -> None:
    secret = b"s" * 32
    token = sign_grant(UploadGrant(key="incoming/abc/a.pdf", expires=2_000), secret)
    assert verify_grant(token, secret, now=1_000) == UploadGrant(key="incoming/abc/a.pdf", expires=2_000)
    assert verify_grant(token, secret, now=3_000) is None
    assert verify_grant(token, b"t" * 32, now=1_000) is None
    forged = sign_grant(UploadGrant(key="results/abc.json", expires=2_000), secret)
    assert verify_grant(forged, secret, now=1_000) is None  # only incoming/ can be written
    assert verify_grant("garbage", secret) is None and verify_grant("a.b", secret) is None


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("scan.png", "scan.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\My Scan (1).pdf", "My_Scan_1_.pdf"),
        ("..hidden", "hidden"),
        ("", "document"),
        (None, "document"),
        ("письмо.pdf", "pdf"),
        ("a" * 300 + ".pdf", "a" * 100),
    ],
)
def test_safe_file_name(given: str | None, safe: str) -> None:
    assert safe_file_name(given) == safe


# -- auth -----------------------------------------------------------------------------------------------------


def _operations(client: TestClient) -> list[tuple[str, str]]:
    schema = client.get("/openapi.json").json()
    return [(method.upper(), path) for path, item in schema["paths"].items() for method in item]


def test_every_operation_but_health_needs_the_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(DOCFLOW_API_KEY=KEY)
    open_paths = {"/health", "/uploads/{token}"}  # an upload URL's token is its credential, as with S3
    operations = [(m, p) for m, p in _operations(client) if p not in open_paths]
    assert len(operations) == 16  # the review queue's five included
    for method, path in operations:
        url = path.replace("{document_id}", "0" * 64).replace("{page_number}", "1")
        missing = _assert_error(client.request(method, url), 401, "unauthorized")
        assert set(missing) <= {"error", "detail", "request_id"}  # never data
        _assert_error(client.request(method, url, headers={"x-api-key": "wrong"}), 403, "forbidden")
        _assert_error(client.request(method, url, headers={"x-api-key": KEY.upper()}), 403, "forbidden")
    assert client.get("/health").status_code == 200
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200
    # The review page and its files hold no data: served without a key (what they show needs it)
    assert client.get("/review").status_code == 200 and client.get("/review/static/review.js").status_code == 200
    ok = client.post("/predict/text", json={"text": RESUME}, headers={"x-api-key": KEY})
    assert ok.status_code == 200
    assert "securitySchemes" in client.get("/openapi.json").json()["components"]


def test_blank_key_setting_means_no_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(DOCFLOW_API_KEY="  ")
    assert client.post("/predict/text", json={"text": RESUME}).status_code == 200


def test_serve_refuses_a_public_interface_without_a_key(api_env: Path) -> None:
    from docflow.api.server import is_loopback, serve
    from docflow.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="DOCFLOW_API_KEY"):
        serve("0.0.0.0", 8000, 1, Settings())
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.com")


# -- OpenAPI ------------------------------------------------------------------------------------------------


def test_openapi_describes_every_body_with_a_model(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert client.get("/docs").status_code == 200
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if path.endswith("/preview") and status == "200":  # an image, described as one
                    assert set(response["content"]) == {"image/png", "image/jpeg"}
                    continue
                content = response.get("content", {}).get("application/json")
                assert content and "$ref" in content["schema"], (method, path, status)
            body = operation.get("requestBody", {}).get("content", {})
            for media, spec in body.items():
                if media != "application/octet-stream":
                    assert "$ref" in spec["schema"], (method, path, media)


# -- server errors ------------------------------------------------------------------------------------------


def test_a_bug_is_a_500_json_without_internals(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow.api import serving

    def broken(*args: Any) -> Any:
        raise RuntimeError("secret internals at /srv/path")

    monkeypatch.setattr(serving, "predict_text", broken)
    body = _assert_error(client.post("/predict/text", json={"text": "x"}), 500, "internal_error")
    assert "secret" not in body["detail"] and body["request_id"]


def test_a_bug_on_an_upload_url_logs_the_path_without_its_token(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow.api import errors, uploads

    logged: list[dict[str, Any]] = []

    class Recorder:
        def exception(self, msg: str, extra: dict[str, Any]) -> None:
            logged.append(extra)

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    original = uploads.accept_granted_upload
    monkeypatch.setattr(uploads, "accept_granted_upload", broken)
    monkeypatch.setattr(errors, "logger", Recorder())
    grant = client.post("/documents/upload-url", json={"file_name": "memo.pdf"})
    path = grant.json()["url"].removeprefix("http://testserver")
    _assert_error(client.put(path, content=b"%PDF-1.4 x"), 500, "internal_error")
    assert logged == [{"path": "/uploads/<redacted>", "method": "PUT"}]
    # the upload was not accepted, so the URL was not used up
    monkeypatch.setattr(uploads, "accept_granted_upload", original)
    put = client.put(path, content=text_pdf([MEMO]))
    assert put.status_code == 202, put.text
    _wait_terminal(client, put.json()["document_id"])


def test_a_store_hiccup_is_a_503_with_retry_after(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow.api import documents
    from docflow.errors import TransientError

    def throttled(*args: Any) -> Any:
        raise TransientError("ThrottlingException on table t")

    monkeypatch.setattr(documents, "list_documents", throttled)
    response = client.get("/documents")
    _assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "5"


# -- the local workers: nothing accepted is lost ----------------------------------------------------------


def _accepted_but_never_run(settings: Settings, data: bytes, name: str) -> PendingUpload:
    """What POST /documents leaves behind when the server dies right after its 202."""
    ctx = build_context(settings)
    workers = LocalWorkers(settings, workers=0)
    workers._submit = lambda job: None  # type: ignore[method-assign]  # the crash: never handed to a worker
    job = PendingUpload(
        upload_id=f"u{len(data)}",
        document_id=hashlib.sha256(data).hexdigest(),
        key=f"incoming/u{len(data)}/{name}",
        source=f"incoming/u{len(data)}/{name}",
    )
    ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.RECEIVED))
    ctx.blobs.put(job.key, data)
    workers.accept(job)
    return job


def test_uploads_accepted_before_a_crash_run_at_the_next_start(api_env: Path) -> None:
    settings = Settings()
    plain = _accepted_but_never_run(settings, text_pdf([MEMO]), "memo.pdf")
    # this one had started: Validate had marked it PROCESSING when the server died
    started = _accepted_but_never_run(settings, text_pdf([RESUME]), "cv.pdf")
    ctx = build_context(settings)
    ctx.records.put_document(
        DocumentRecord(document_id=started.document_id, status=Status.PROCESSING, source=started.source)
    )

    workers = LocalWorkers(settings, workers=0)
    assert workers.start() == 2
    assert workers.wait_idle(timeout=60)
    workers.shutdown(grace=1)
    for job in (plain, started):
        record = ctx.records.get_document(job.document_id)
        assert record is not None and record.status in (Status.CLASSIFIED, Status.NEEDS_REVIEW), record
        assert [u.status for u in ctx.records.list_uploads(job.document_id)] == [record.status]
    assert workers.journaled() == []
    assert LocalWorkers(settings, workers=0).start() == 0


def test_shutdown_keeps_queued_uploads_for_the_next_start(api_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow.api import worker

    release, running = threading.Event(), threading.Event()
    real_work = worker._work

    def slow_work(job: PendingUpload) -> Status:
        running.set()
        release.wait(30)
        return real_work(job)

    monkeypatch.setattr(worker, "_work", slow_work)
    settings = Settings()
    ctx = build_context(settings)
    workers = LocalWorkers(settings, workers=0)
    jobs = []
    for text, name in ((MEMO, "memo.pdf"), (RESUME, "cv.pdf")):
        data = text_pdf([text])
        job = PendingUpload(
            upload_id=name.split(".")[0],
            document_id=hashlib.sha256(data).hexdigest(),
            key=f"incoming/x/{name}",
            source=f"incoming/x/{name}",
        )
        ctx.blobs.put(job.key, data)
        workers.accept(job)
        jobs.append(job)
    # When the server stops while the first upload runs and the second waits
    assert running.wait(10)
    stopper = threading.Thread(target=workers.shutdown, args=(0.2,))
    stopper.start()
    time.sleep(0.3)
    release.set()
    stopper.join(10)
    # Then new uploads are refused, and the waiting one is still journaled for the next start
    with pytest.raises(worker.StoppingError):
        workers.accept(jobs[0])
    workers.wait_idle(30)
    assert [j.upload_id for j in workers.journaled()] == ["cv"]
    monkeypatch.setattr(worker, "_work", real_work)
    again = LocalWorkers(settings, workers=0)
    assert again.start() == 1 and again.wait_idle(60)
    record = ctx.records.get_document(jobs[1].document_id)
    assert record is not None and record.status.terminal


def test_access_log_hides_upload_tokens() -> None:
    import logging

    from docflow.api.server import RedactUploadTokens

    def line(path: str) -> str:
        record = logging.LogRecord("uvicorn.access", 20, "", 0, '%s - "%s %s HTTP/%s" %d', None, None)
        record.args = ("127.0.0.1:5", "PUT", path, "1.1", 202)
        assert RedactUploadTokens().filter(record) is True
        return record.getMessage()

    assert line("/uploads/eyJrZXkiOiJpbmNvbWluZy9hL2IucGRmIn0.c2ln") == (
        '127.0.0.1:5 - "PUT /uploads/<redacted> HTTP/1.1" 202'
    )
    assert line("/documents/abc?x=1") == '127.0.0.1:5 - "PUT /documents/abc?x=1 HTTP/1.1" 202'


def test_a_failed_document_sent_again_is_not_reported_terminal_before_its_rerun(docflow_home: Path) -> None:
    """A client polls until terminal: the old FAILED must not end its poll while the retry waits in the queue."""
    from docflow.api import documents

    ctx = build_context(Settings(home=docflow_home))
    doc = "d" * 64
    ctx.records.put_document(DocumentRecord(document_id=doc, status=Status.FAILED, source="first.png", reason="x"))
    ctx.records.put_upload(UploadRecord(document_id=doc, source="first.png", status=Status.FAILED))
    assert documents.get_document(ctx, doc).terminal
    ctx.records.put_upload(UploadRecord(document_id=doc, source="again.png", status=Status.RECEIVED))
    polled = documents.get_document(ctx, doc)
    assert (polled.status, polled.terminal) == (Status.RECEIVED, False)


def test_an_upload_refused_as_busy_leaves_no_document_behind(
    make_client: Callable[..., TestClient], docflow_home: Path
) -> None:
    client = make_client(DOCFLOW_API_MAX_QUEUE="1")
    first = _upload(client, _png(LETTER), "scan.png", "image/png")  # OCR keeps the one place in the queue busy
    assert first.status_code == 202, first.text
    pdf = text_pdf([f"{MEMO}\nrefused"])
    refused = _upload(client, pdf)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "10", refused.text
    document_id = hashlib.sha256(pdf).hexdigest()
    _assert_error(client.get(f"/documents/{document_id}"), 404, "not_found")  # once a FAILED phantom
    assert not [p for p in (docflow_home / "blobs").rglob("*") if p.is_file() and p.name == "memo.pdf"]
    _wait_terminal(client, first.json()["document_id"])


def test_model_describes_its_scan_head(
    make_client: Callable[..., TestClient], tiny_model: Path, tmp_path: Path
) -> None:
    import shutil

    from docflow_training.scan_head import ScanHeadConfig, fit_scan_head
    from tests.unit.test_scan_head import LABELS, synthetic_scans, without

    with_head = tmp_path / "with-head"
    shutil.copytree(tiny_model, with_head)
    fitted = fit_scan_head(without(synthetic_scans(), "resume"), LABELS, ScanHeadConfig(repeats=1))
    extra = {"fitted_on": {"scans": 28}, "cross_validated": {"top1": 0.9}}
    (with_head / "scan_head.json").write_text(json.dumps(fitted.spec.model_dump() | extra))
    body = make_client(DOCFLOW_MODEL_DIR=str(with_head)).get("/model").json()
    assert body["scan_head"] == {
        "review_threshold": fitted.spec.review_threshold,
        "uncalibrated": ["resume"],
        "fitted_on_scans": 28,
        "cross_validated": {"top1": 0.9},
    }
    assert make_client(DOCFLOW_MODEL_DIR=str(tiny_model)).get("/model").json()["scan_head"] is None


def test_an_upload_no_worker_can_start_for_is_a_503_not_a_document_left_waiting(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, docflow_home: Path
) -> None:
    from docflow.pipeline.supervisor import Supervisor

    def no_worker(*_: object) -> None:  # starting a worker failed (out of memory, a process limit)
        raise OSError(12, "Cannot allocate memory")

    pdf = text_pdf([f"{MEMO}\nno worker"])
    with monkeypatch.context() as patched:
        patched.setattr(Supervisor, "_hand_to", no_worker)
        refused = _upload(client, pdf)
    body = _assert_error(refused, 503, "busy")
    assert refused.headers["retry-after"] == "10" and "no worker process could be started" in body["detail"]
    document_id = hashlib.sha256(pdf).hexdigest()
    polled = client.get(f"/documents/{document_id}").json()  # never left RECEIVED with nobody to process it
    assert (polled["status"], polled["terminal"]) == ("FAILED", True), polled
    assert not list((docflow_home / "api" / "queue").glob("*.json")), "refused, yet journaled for the next start"
    accepted = _upload(client, pdf)  # the client's retry, once workers start again
    assert accepted.status_code == 202, accepted.text
    assert _wait_terminal(client, document_id)["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
