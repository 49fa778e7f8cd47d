"""The review queue over the API (TestClient, local stores, the tiny model of test_api): the queue, a
document's text and page previews, decisions and their undo, and the page itself."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from docflow.samples import MEMO, text_pdf
from tests.unit.test_api import RESUME, _assert_error, _png, _upload, _wait_terminal

pytestmark = pytest.mark.unit

EMAIL = "From: sarah@example.com\nTo: team@example.com\nSubject: budget meeting\nSent: Monday\n\nSee you at ten."


@pytest.fixture
def queued(make_client: Callable[..., TestClient]) -> tuple[TestClient, dict[str, str]]:
    """Three documents, each NEEDS_REVIEW (a review threshold no prediction reaches): a two-page PDF, a scan
    read by OCR, and a one-page PDF."""
    client = make_client(DOCFLOW_REVIEW_THRESHOLD="1.0")
    ids: dict[str, str] = {}
    for name, data, mime in (
        ("two-pages.pdf", text_pdf([RESUME, MEMO]), "application/pdf"),
        ("scan.png", _png(EMAIL), "image/png"),
        ("mail.pdf", text_pdf([EMAIL]), "application/pdf"),
    ):
        accepted = _upload(client, data, name, mime)
        assert accepted.status_code == 202, accepted.text
        ids[name] = accepted.json()["document_id"]
        assert _wait_terminal(client, ids[name])["status"] == "NEEDS_REVIEW"
    return client, ids


def test_the_queue_lists_what_waits_longest_first_with_filters_and_its_length(queued: Any) -> None:
    client, ids = queued
    page = client.get("/review/queue").json()
    assert page["total"] == 3 and page["next_cursor"] is None
    assert [i["document_id"] for i in page["items"]] == [ids["two-pages.pdf"], ids["scan.png"], ids["mail.pdf"]]
    first = page["items"][0]
    assert first["file_name"] == "two-pages.pdf" and first["pages"] == 2 and first["code"] == "LOW_CONFIDENCE"
    assert first["predicted_class"] in first["all_scores"] and first["reason"].startswith("confidence")
    # One page at a time, with an opaque cursor
    one = client.get("/review/queue", params={"limit": 1}).json()
    rest = client.get("/review/queue", params={"limit": 5, "cursor": one["next_cursor"]}).json()
    assert [i["document_id"] for i in one["items"] + rest["items"]] == [i["document_id"] for i in page["items"]]
    _assert_error(client.get("/review/queue", params={"cursor": "garbage"}), 422, "invalid_cursor")
    # Filters: by the model's class, by reason; the total counts what the filters keep
    by_class = client.get("/review/queue", params={"predicted_class": first["predicted_class"]}).json()
    assert by_class["total"] == sum(i["predicted_class"] == first["predicted_class"] for i in page["items"])
    assert client.get("/review/queue", params={"reason": "OUT_OF_SCOPE"}).json() == {
        "total": 0,
        "items": [],
        "next_cursor": None,
    }
    _assert_error(client.get("/review/queue", params={"reason": "BORED"}), 422)


def test_text_and_page_previews(queued: Any) -> None:
    client, ids = queued
    text = client.get(f"/documents/{ids['two-pages.pdf']}/text").json()
    assert [p["page"] for p in text["pages"]] == [1, 2] and "CURRICULUM VITAE" in text["pages"][0]["text"]
    assert "MEMORANDUM" in text["pages"][1]["text"] and text["pages"][1]["source"] == "pdf_text"
    first = client.get(f"/documents/{ids['two-pages.pdf']}/pages/1/preview")
    second = client.get(f"/documents/{ids['two-pages.pdf']}/pages/2/preview")
    assert first.status_code == second.status_code == 200 and first.content != second.content
    assert first.headers["cache-control"] == "private, no-store"
    image = Image.open(io.BytesIO(first.content))
    assert image.format in ("PNG", "JPEG") and max(image.size) == 1400
    _assert_error(client.get(f"/documents/{ids['two-pages.pdf']}/pages/3/preview"), 404, "no_such_page")
    scan = client.get(f"/documents/{ids['scan.png']}/pages/1/preview")
    assert scan.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(scan.content)).size) <= 1400
    _assert_error(client.get(f"/documents/{'0' * 64}/text"), 404, "not_found")


def test_a_decision_settles_the_document_and_undo_takes_it_back(queued: Any) -> None:
    client, ids = queued
    doc = ids["scan.png"]
    suggested = client.get(f"/documents/{doc}").json()["prediction"]["predicted_class"]
    decided = client.post(f"/documents/{doc}/decision", json={"label": "email", "reviewer": " Ada "})
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert body["document"]["status"] == "REVIEWED" and body["document"]["label"] == "email"
    assert body["decision"]["reviewer"] == "Ada" and body["decision"]["predicted_class"] == suggested
    assert body["decision"]["previous_status"] == "NEEDS_REVIEW" and body["decision"]["api_key_id"] is None
    # It left the queue and the listing by status
    assert client.get("/review/queue").json()["total"] == 2
    waiting = client.get("/documents", params={"status": "NEEDS_REVIEW"}).json()["items"]
    assert doc not in [d["document_id"] for d in waiting]
    # Its history shows the model's prediction and the person's decision side by side
    history = client.get(f"/documents/{doc}/predictions").json()
    assert [p["predicted_class"] for p in history["predictions"]] == [suggested]
    assert [(d["label"], d["reviewer"], d["undone_at"]) for d in history["decisions"]] == [("email", "Ada", None)]
    # Undo: back in the queue, at its old place, the label gone, the decision kept and marked undone
    undone = client.delete(f"/documents/{doc}/decision")
    assert undone.status_code == 200, undone.text
    assert undone.json()["document"]["status"] == "NEEDS_REVIEW" and undone.json()["document"]["label"] is None
    assert [i["document_id"] for i in client.get("/review/queue").json()["items"]][1] == doc
    assert client.get(f"/documents/{doc}/predictions").json()["decisions"][0]["undone_at"] is not None
    _assert_error(client.delete(f"/documents/{doc}/decision"), 404, "no_decision")
    # None of these: a decision too; and a label can be corrected later
    out = client.post(f"/documents/{doc}/decision", json={"label": "out_of_scope", "reviewer": "Ada"}).json()
    assert (out["document"]["status"], out["document"]["label"]) == ("REVIEWED", "out_of_scope")
    corrected = client.put(f"/documents/{doc}/label", json={"label": "resume", "reviewer": "Bo"}).json()
    assert (corrected["status"], corrected["label"]) == ("REVIEWED", "resume")
    decisions = client.get(f"/documents/{doc}/predictions").json()["decisions"]
    assert [(d["label"], d["reviewer"], d["previous_status"]) for d in decisions[1:]] == [
        ("out_of_scope", "Ada", "NEEDS_REVIEW"),
        ("resume", "Bo", "REVIEWED"),
    ]
    # Classified again by the champion, a decided document keeps its decision
    again = client.post(f"/predict/document/{doc}").json()
    assert again["status"] == "REVIEWED" and client.get(f"/documents/{doc}").json()["label"] == "resume"


def test_a_label_through_the_api_is_the_same_decision(queued: Any) -> None:
    client, ids = queued
    doc = ids["mail.pdf"]
    labelled = client.put(f"/documents/{doc}/label", json={"label": "email"})
    assert labelled.status_code == 200 and labelled.json()["status"] == "REVIEWED"
    [decision] = client.get(f"/documents/{doc}/predictions").json()["decisions"]
    assert decision["reviewer"] == "api" and decision["label"] == "email"
    assert client.get("/review/queue").json()["total"] == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"label": "invoice", "reviewer": "Ada"}, "unknown_label"),
        ({"label": "email", "reviewer": "  "}, "invalid_request"),
        ({"label": "email"}, "invalid_request"),
        ({"label": "email", "reviewer": "Ada", "extra": 1}, "invalid_request"),
    ],
)
def test_bad_decisions_are_refused(queued: Any, body: dict[str, Any], code: str) -> None:
    client, ids = queued
    _assert_error(client.post(f"/documents/{ids['mail.pdf']}/decision", json=body), 422, code)
    _assert_error(client.post(f"/documents/{'0' * 64}/decision", json={"label": "email", "reviewer": "A"}), 404)


def test_the_page_and_its_files_are_served_with_a_strict_policy(make_client: Callable[..., TestClient]) -> None:
    client = make_client(DOCFLOW_API_KEY="k" * 20)
    page = client.get("/review")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    # Every link relative to the page: it works under API Gateway's stage and LocalStack's path alike
    assert '<script src="review/static/review.js" defer>' in page.text and 'src="/' not in page.text
    script = client.get("/review/static/review.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text  # document text is only ever set as textContent
    _assert_error(client.get("/review/static/..%2Fapp.py"), 404)
    _assert_error(client.get("/review/queue"), 401, "unauthorized")
    script_text = script.text
    assert 'fetch("/' not in script_text and "api(`/" not in script_text and 'api("/' not in script_text


def test_two_reviewers_on_one_document_never_overwrite_or_undo_each_other(queued: Any) -> None:
    client, ids = queued
    doc = ids["scan.png"]
    # Alice and Bob were shown the same document; Alice decides first
    alice = client.post(
        f"/documents/{doc}/decision", json={"label": "email", "reviewer": "Alice", "expect_status": "NEEDS_REVIEW"}
    )
    assert alice.status_code == 200, alice.text
    # Bob's decision on what his page showed is refused, not recorded as a correction
    bob = client.post(
        f"/documents/{doc}/decision", json={"label": "resume", "reviewer": "Bob", "expect_status": "NEEDS_REVIEW"}
    )
    body = _assert_error(bob, 409, "already_decided")
    assert "REVIEWED as 'email'" in body["detail"]
    assert client.get(f"/documents/{doc}").json()["label"] == "email"
    # A deliberate correction (no expected status) is one; then Alice's undo of her own decision is refused
    assert client.put(f"/documents/{doc}/label", json={"label": "resume", "reviewer": "Bob"}).status_code == 200
    mine = alice.json()["decision"]["decision_id"]
    refused = client.delete(f"/documents/{doc}/decision", params={"decision_id": mine})
    assert "by Bob" in _assert_error(refused, 409, "not_latest_decision")["detail"]
    assert client.get(f"/documents/{doc}").json()["label"] == "resume"
    # Bob's, named, is undone
    latest = client.get(f"/documents/{doc}/predictions").json()["decisions"][-1]["decision_id"]
    undone = client.delete(f"/documents/{doc}/decision", params={"decision_id": latest})
    assert undone.status_code == 200 and undone.json()["document"]["label"] == "email"


def test_a_document_without_text_is_never_reported_confident(make_client: Callable[..., TestClient]) -> None:
    client = make_client(DOCFLOW_REVIEW_THRESHOLD="0.0")
    blank = _png("")
    document_id = _upload(client, blank, "blank.png", "image/png").json()["document_id"]
    done = _wait_terminal(client, document_id)
    assert (done["status"], done["code"]) == ("NEEDS_REVIEW", "NO_TEXT")
    again = client.post(f"/predict/document/{document_id}").json()
    assert again["status"] == "NEEDS_REVIEW" and again["is_confident"] is False
