"""A 300-page scanned PDF completes: in the state machine through the Map over page ranges (30 ranges
of 10 pages, each its own ExtractPages invocation), and in the embedded runner with memory that does not
grow with the page count.

The pages are real rasters OCR'd by Tesseract, kept small (500x120 px, a few large words) so 300 pages
take ~15-20 s on two cores (bench/big_pdf.py); each page carries its own number, so the merged text is
checked page by page.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.big_pdf import measure, measure_pdf, page_text, scanned_pdf, text_layer_pdf
from docflow.values import ExtractionResult
from infra_cdk import constants as c
from tests.aws_fixtures import BUCKET
from tests.integration import test_state_machine_asl as asl
from tests.integration.test_state_machine_asl import Faults, _entered, _execute

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGES = 300

# The state machine harness's fixtures, shared with test_state_machine_asl.
machine = asl.machine
faults = asl.faults


def test_state_machine_extracts_300_scanned_pages_in_30_ranges(
    machine: dict[str, Any], faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deployed chunking, not the harness's small test values.
    monkeypatch.setenv("DOCFLOW_LARGE_PDF_PAGES", str(c.LARGE_PDF_PAGES))
    monkeypatch.setenv("DOCFLOW_PAGES_PER_CHUNK", str(c.PAGES_PER_CHUNK))
    assert (c.LARGE_PDF_PAGES, c.PAGES_PER_CHUNK) == (20, 10)

    status, run = _execute(machine, "incoming/scan-300.pdf", scanned_pdf(PAGES), timeout=400)
    assert status == "SUCCEEDED", run["output"]
    out = run["output"]
    assert out["status"] in ("CLASSIFIED", "NEEDS_REVIEW") and out["pages"] == PAGES
    assert out["text_source"] == "ocr"

    # The Map: 30 invocations of ExtractPages, one per range of 10 pages, none of ExtractText.
    assert faults.calls["ExtractPages"] == 30 and "ExtractText" not in faults.calls
    ranges = sorted(
        (p["first_page"], p["last_page"])
        for p in (
            json.loads(e["taskScheduledEventDetails"]["parameters"])["Payload"]
            for e in run["history"]
            if "taskScheduledEventDetails" in e and "ExtractPages" in e["taskScheduledEventDetails"]["parameters"]
        )
    )
    assert ranges == [(first, first + 9) for first in range(1, PAGES + 1, 10)]
    entered = _entered(run["history"])
    assert "Extract page ranges" in entered and "Merge page ranges" in entered

    # The merged text: every page, in order, each read as its own.
    body = machine["s3"].get_object(Bucket=BUCKET, Key=out["text_key"])["Body"].read()
    merged = ExtractionResult.model_validate_json(body)
    assert [p.page for p in merged.pages] == list(range(1, PAGES + 1))
    assert all(page_text(p.page) in p.text for p in merged.pages)
    assert all(p.source == "ocr" for p in merged.pages)


def test_embedded_runner_300_pages_with_bounded_memory() -> None:
    baseline, big = measure(1), measure(PAGES)
    assert big["status"] in ("CLASSIFIED", "NEEDS_REVIEW"), big
    assert big["pages"] == PAGES and big["ranges"] == 30
    assert big["page_numbers_in_order"] and big["pages_read"] == PAGES
    # One page image at a time: 300 pages cost no more memory than 1 (each rendered page is ~0.6 MB of
    # BGRA; holding them would add ~190 MB). The baseline is imports, the model and Tesseract (~170 MB).
    assert big["peak_rss_mb"] - baseline["peak_rss_mb"] < 32, (baseline, big)
    assert big["peak_rss_mb"] < 512, big


def test_the_heaviest_text_layer_accepted_stays_under_512_mib() -> None:
    """Extracting a page's text costs PDFium ~100 bytes per byte of the page's content: validation caps what
    a page draws (max_page_content_bytes) and what the whole PDF draws (max_content_bytes), so the heaviest
    PDF it accepts, as many pages at the per-page limit as the total allows (16), peaks under 512 MiB in one
    fresh embedded run (models, imports and Tesseract included); a page over the limit is refused."""
    from docflow.values import ValidationLimits

    limits = ValidationLimits()
    limit = limits.max_page_content_bytes
    n_pages = limits.max_content_bytes // limit
    assert n_pages == 16
    heavy = measure_pdf(text_layer_pdf(n_pages, limit - 64 * 1024))
    assert heavy["status"] in ("CLASSIFIED", "NEEDS_REVIEW") and heavy["pages"] == n_pages, heavy
    assert heavy["peak_rss_mb"] < 512, heavy
    over = measure_pdf(text_layer_pdf(1, limit + 256 * 1024))
    assert over["status"] == "REJECTED" and "limit per page" in over["reason"], over
