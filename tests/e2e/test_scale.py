"""Hundreds of documents with injected faults through the embedded runner: nothing lost, nothing doubled.

5 % of documents fail ExtractText once (transient), 1 % fail Classify for good (permanent), chosen per
document by seed through DOCFLOW_FAULTS, the setting a deployment would use. The audit reads the record
store (bench/fault_run.py). 300 documents keep the test near 30 s on two busy cores; `make bench` runs 1,000.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.fault_run import DEFAULT_FAULTS, audit, make_documents, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCS = int(os.environ.get("DOCFLOW_SCALE_DOCS", "300"))
SEED = 7


def test_every_document_ends_in_one_terminal_status_under_faults(tmp_path: Path) -> None:
    files = make_documents(tmp_path / "docs", DOCS)
    run(files, tmp_path / "home", DEFAULT_FAULTS, SEED, workers=2)
    result = audit(files, tmp_path / "home", DEFAULT_FAULTS, SEED)
    assert result["problems"] == []
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert result["upload_records"] == result["document_records"] == DOCS
    # The faults did happen (with this seed: some of each), and each permanent one is a FAILED document.
    assert result["transient_injected"] > 0 and result["permanent_injected"] > 0
    assert result["failed"] == result["permanent_injected"]
    assert result["statuses"].get("FAILED", 0) == result["permanent_injected"]
    assert sum(result["statuses"].values()) == DOCS
    assert result["predictions"] == DOCS - result["failed"]
