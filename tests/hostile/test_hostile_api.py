"""Hostile inputs through the REST API (FastAPI app on the local stores, real Tesseract and ONNX, the tiny
test model): each case uploaded to POST /documents and polled to its terminal status.

The API answers three refusals itself, before storing anything, from the same validation: an empty file
(422 empty_file), a type that is not a document (415 unsupported_media_type) and a file over its upload cap
(413 payload_too_large). Every other case must end with the outcome the CLI and the state machine reach.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from docflow.values import Status
from tests.hostile.cases import BY_NAME, Case, cases_for, outcome_problems

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CASES = cases_for("api")
POLL_LIMIT_S = 30  # per document, from upload to terminal status
HTTP_REFUSALS = {"EMPTY": (422, "empty_file"), "UNSUPPORTED_TYPE": (415, "unsupported_media_type")}


def _http_refusal(case: Case) -> tuple[int, str] | None:
    if case.name.startswith("oversized"):
        return 413, "payload_too_large"  # the API's 4 MiB cap (Lambda's payload), before the 50 MiB one
    return HTTP_REFUSALS.get(case.code or "")


def _wire_name(filename: str) -> str:
    # A multipart file name travels as bytes; one that is not UTF-8 arrives as its bytes, read as Latin-1.
    return filename.encode("utf-8", "surrogateescape").decode("latin-1") if not filename.isprintable() else filename


def _wait(client: TestClient, document_id: str, *, upload_terminal: bool = False) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    while True:
        body: dict[str, Any] = client.get(f"/documents/{document_id}").json()
        uploads_done = all(Status(u["status"]).terminal for u in body.get("uploads") or [])
        if body.get("terminal") and (uploads_done or not upload_terminal):
            return body, time.monotonic() - started
        assert time.monotonic() - started < POLL_LIMIT_S, f"{document_id} not terminal: {body}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[dict[str, Any]]:
    from docflow.api.app import create_app
    from docflow.api.config import get_api_settings
    from docflow.context import get_context
    from docflow.settings import get_settings

    def clear() -> None:
        get_settings.cache_clear()
        get_context.cache_clear()
        get_api_settings.cache_clear()

    results: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DOCFLOW_HOME", str(tmp_path_factory.mktemp("api-home")))
        env.setenv("DOCFLOW_MODEL_DIR", str(tiny_model))
        for var in ("DOCFLOW_API_KEY", "DOCFLOW_API_MAX_UPLOAD_BYTES", "DOCFLOW_BACKEND"):
            env.delenv(var, raising=False)
        clear()
        try:
            with TestClient(create_app(), raise_server_exceptions=False) as client:
                # Originals first, each to its end, then the copies: which upload is the DUPLICATE is fixed.
                for case in sorted(CASES, key=lambda c: c.duplicate_of is not None):
                    response = client.post(
                        "/documents", files={"file": (_wire_name(case.filename), case.data(), "application/pdf")}
                    )
                    if response.status_code != 202:
                        results[case.name] = {"http": response.status_code, **response.json()}
                        continue
                    document_id = response.json()["document_id"]
                    body, seconds = _wait(client, document_id, upload_terminal=case.duplicate_of is not None)
                    results[case.name] = {"http": 202, "seconds": seconds, **body}
        finally:
            clear()
    yield results


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_each_case_has_its_exact_outcome(outcomes: dict[str, Any], name: str) -> None:
    case = BY_NAME[name]
    got = outcomes[name]
    refusal = _http_refusal(case)
    if refusal is not None:
        # Refused at the door: the status code, the error, and the validation's reason in the detail.
        assert (got["http"], got["error"]) == refusal, got
        for words in case.reason_has if refusal[0] != 413 else ():
            assert words.lower() in got["detail"].lower(), got
        return
    assert got["http"] == 202, got
    assert got["seconds"] < POLL_LIMIT_S
    if case.duplicate_of:
        original = outcomes[case.duplicate_of]
        assert got["document_id"] == original["document_id"]
        duplicates = [u for u in got["uploads"] if u["status"] == "DUPLICATE"]
        assert len(duplicates) == 1 and duplicates[0]["duplicate_of"] == original["document_id"], got["uploads"]
        return
    assert not outcome_problems(case, got["status"], got["code"], got["reason"], got["text_source"])
    # The upload's name never becomes a path: it is reduced to one safe component under incoming/<id>/.
    source = got["uploads"][0]["source"]
    assert source.startswith("incoming/") and ".." not in source and source.count("/") == 2, source
