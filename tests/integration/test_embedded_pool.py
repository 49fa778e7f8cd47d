"""`docflow process`'s pool when a worker process dies: the document that kills its worker fails on its own,
with its record FAILED; the documents that ran beside it or were queued behind it are not charged."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from docflow import telemetry
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.pipeline import embedded
from docflow.samples import EMAIL, LETTER, MEMO, REPORT, text_pdf
from docflow.settings import DEFAULT_MODEL_DIR, Settings
from docflow.values import Status

pytestmark = pytest.mark.integration


def _crash_on_bad(job: embedded.FileJob) -> embedded.WorkResult:
    """The work of a worker whose document "bad" kills it (as a crash in a native library would) half a
    second in, while the document beside it is still running (each takes over a second)."""
    if Path(job.path).name == "bad.pdf":
        time.sleep(0.5)
        os._exit(70)
    time.sleep(1.5)
    return embedded._work(job)


@pytest.fixture(autouse=True)
def _no_sink() -> Iterator[None]:
    previous = telemetry.configure(telemetry.NullSink())
    yield
    telemetry.configure(previous)


def test_a_document_that_kills_its_worker_fails_alone_and_on_record(
    docflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = []
    for name, text in (("bad.pdf", LETTER), ("good1.pdf", MEMO), ("good2.pdf", EMAIL), ("good3.pdf", REPORT)):
        path = tmp_path / name
        path.write_bytes(text_pdf([f"{text}\n{name}"]))
        files.append((path, str(path)))
    monkeypatch.setattr(embedded, "_work", _crash_on_bad)  # the parent submits this; workers import it
    settings = Settings(home=docflow_home, model_dir=DEFAULT_MODEL_DIR)
    results = {Path(r.source).name: r for r in embedded.process_paths(files, settings, workers=2)}

    assert set(results) == {"bad.pdf", "good1.pdf", "good2.pdf", "good3.pdf"}
    for name in ("good1.pdf", "good2.pdf", "good3.pdf"):  # beside it or behind it: not charged
        assert results[name].status in (Status.CLASSIFIED, Status.NEEDS_REVIEW), results[name]
    bad = results["bad.pdf"]
    assert bad.status == Status.FAILED and bad.code == "WorkerDied", bad
    assert "died each of the 2 times it ran alone" in (bad.reason or "")
    record = SqliteRecordStore(docflow_home / "docflow.sqlite3").get_document(bad.document_id or "")
    assert record is not None and record.status == Status.FAILED  # not left PROCESSING for the lease
