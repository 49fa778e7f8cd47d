"""Every hostile case through the Validate domain function alone (no pipeline): the fast check of the codes
the three fronts assert, and that no case costs more than a second to judge."""

from __future__ import annotations

import time

import pytest

from docflow.domain.validation import validate_document
from docflow.values import ValidationLimits
from tests.hostile.cases import CASES, Case, outcome_problems

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_validation_decides_each_case(case: Case) -> None:
    data = case.data()
    started = time.perf_counter()
    report = validate_document(data, ValidationLimits())
    assert time.perf_counter() - started < 1.0
    if case.status == "REJECTED":
        assert not outcome_problems(case, "REJECTED", report.code, report.reason, None)
    else:  # processed or DUPLICATE: validation lets it in; the pipeline decides the rest
        assert report.accepted, report.reason


def test_content_limit_counts_what_the_stream_expands_to() -> None:
    from tests.hostile.cases import _huge_text_layer_pdf

    small_limit = ValidationLimits(max_content_stream_bytes=1024 * 1024)
    assert validate_document(_huge_text_layer_pdf(2), small_limit).code == "CONTENT_TOO_LARGE"
    assert validate_document(_huge_text_layer_pdf(2), ValidationLimits()).accepted  # 2 MB < 4 MiB
    total = ValidationLimits(max_content_stream_bytes=3 * 1024 * 1024, max_content_bytes=1024 * 1024)
    report = validate_document(_huge_text_layer_pdf(2), total)
    assert report.code == "CONTENT_TOO_LARGE" and "in all" in (report.reason or "")


def test_a_page_drawing_more_than_the_page_limit_over_several_streams_is_refused() -> None:
    from bench.big_pdf import text_layer_pdf

    # Each of a page's two streams is well under the per-stream limit: together they are what its text costs
    over = validate_document(text_layer_pdf(1, 3 * 1024 * 1024), ValidationLimits())
    assert over.code == "CONTENT_TOO_LARGE" and "the limit per page" in (over.reason or ""), over.reason
    # Pages just under the limit are accepted (their extraction stays under 512 MiB: test_big_pdf)
    assert validate_document(text_layer_pdf(4, 2 * 1024 * 1024 - 64 * 1024), ValidationLimits()).accepted


def test_the_pdf_engine_cannot_run_javascript() -> None:
    """The javascript and embedded-file cases are PROCESSED on the strength of this: the PDFium build has no
    JavaScript engine (V8) nor XFA, and docflow never initialises a form-fill environment (which is where
    PDFium would run document JavaScript)."""
    from pathlib import Path

    import pypdfium2.version

    assert not {"V8", "XFA"} & set(pypdfium2.version.PDFIUM_INFO.flags)
    package = Path(__file__).resolve().parents[2] / "functions" / "docflow"
    assert not [
        p for p in package.rglob("*.py") if "FormFillEnvironment" in p.read_text() or "init_forms" in p.read_text()
    ]


def test_a_right_to_left_text_layer_is_read_as_text() -> None:
    from docflow.domain.extraction import extract_text
    from docflow.values import MediaType, OcrOptions
    from tests.hostile.cases import BY_NAME

    result = extract_text(BY_NAME["pdf-unicode-rtl-text-layer"].data(), MediaType.PDF, OcrOptions())
    assert result.text_source == "pdf_text"
    # PDFium gives the letters of each right-to-left run in visual order; every one of them is there.
    from tests.hostile.cases import RTL_LINE

    hebrew_and_arabic = set(RTL_LINE) - set(" \u2014")
    assert hebrew_and_arabic <= set(result.text)
    assert "\u202e" in result.text and "MEMORANDUM" in result.text


def test_an_upload_of_a_1024_byte_key_fits_a_dynamodb_sort_key() -> None:
    from docflow.adapters.dynamodb import UPLOAD_PREFIX, upload_sort_key

    short = "s3://bucket/incoming/memo.pdf"
    assert upload_sort_key(short) == UPLOAD_PREFIX + short  # unchanged where it fits
    long_a = "s3://docflow-documents-test/incoming/" + "\u05d0" * 600 + "a.png"  # 2-byte characters, > 1024 bytes
    long_b = long_a[:-5] + "b.png"
    keys = {upload_sort_key(long_a), upload_sort_key(long_b)}
    assert len(keys) == 2 and upload_sort_key(long_a) in keys  # distinct, and the same on every delivery
    assert all(len(key.encode()) <= 1024 and key.startswith(UPLOAD_PREFIX + "s3://docflow") for key in keys)
