"""`docflow serve`'s pipeline workers as processes: a worker killed in the middle of a document (out of memory,
a crash in a native library) costs that document a retry on a fresh pool, never its terminal status."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from docflow.api.worker import LocalWorkers, PendingUpload, WorkersUnavailableError, WorkResult, _work
from docflow.context import StepContext, build_context
from docflow.records import UploadRecord
from docflow.samples import EMAIL, LETTER, MEMO, render_page, text_pdf
from docflow.settings import Settings
from docflow.values import Status

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(docflow_home: Path, tiny_model: Path) -> Settings:
    return Settings(home=docflow_home, model_dir=tiny_model)


def _accept_scan(settings: Settings, workers: LocalWorkers) -> tuple[PendingUpload, StepContext]:
    buf = io.BytesIO()
    render_page(LETTER).save(buf, "PNG")  # OCR takes long enough to be caught in the middle
    data = buf.getvalue()
    ctx = build_context(settings)
    job = PendingUpload(
        upload_id="scan",
        document_id=hashlib.sha256(data).hexdigest(),
        key="incoming/scan/letter.png",
        source="incoming/scan/letter.png",
    )
    ctx.blobs.put(job.key, data)
    ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.RECEIVED))
    workers.accept(job)
    return job, ctx


def _kill_the_worker_mid_document(workers: LocalWorkers, ctx: StepContext, job: PendingUpload) -> None:
    deadline = time.monotonic() + 60
    while True:  # Validate has run (PROCESSING): the worker is extracting text
        record = ctx.records.get_document(job.document_id)
        if record is not None and record.status == Status.PROCESSING:
            break
        assert time.monotonic() < deadline, "the worker never started the document"
        time.sleep(0.01)
    pids = workers.worker_pids()
    assert pids, "no worker process to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_costs_a_retry_not_the_document(settings: Settings) -> None:
    workers = LocalWorkers(settings, workers=1, max_attempts=2)
    try:
        job, ctx = _accept_scan(settings, workers)
        _kill_the_worker_mid_document(workers, ctx, job)
        assert workers.wait_idle(timeout=120)
        record = ctx.records.get_document(job.document_id)
        assert record is not None and record.status in (Status.CLASSIFIED, Status.NEEDS_REVIEW), record
        assert record.text_source == "ocr"
        assert [u.status for u in ctx.records.list_uploads(job.document_id)] == [record.status]
        assert workers.journaled() == []
    finally:
        workers.shutdown(grace=5)


def test_a_worker_killed_on_the_last_attempt_leaves_the_document_failed_with_its_reason(settings: Settings) -> None:
    workers = LocalWorkers(settings, workers=1, max_attempts=1)
    try:
        job, ctx = _accept_scan(settings, workers)
        _kill_the_worker_mid_document(workers, ctx, job)
        assert workers.wait_idle(timeout=120)
        record = ctx.records.get_document(job.document_id)
        assert record is not None and record.status == Status.FAILED
        assert record.code == "Interrupted" and "stopped unexpectedly" in (record.reason or "")
        assert [u.status for u in ctx.records.list_uploads(job.document_id)] == [Status.FAILED]
        assert workers.journaled() == []
    finally:
        workers.shutdown(grace=5)


def _crash_on_bad(job: PendingUpload) -> WorkResult:
    """The work of a pool whose document "bad" kills its worker process (as a crash in a native library would)."""
    if job.upload_id == "bad":
        os._exit(70)
    return _work(job)


def _accept(settings: Settings, workers: LocalWorkers, ctx: StepContext, upload_id: str, data: bytes) -> PendingUpload:
    key = f"incoming/{upload_id}/{upload_id}.pdf"
    job = PendingUpload(upload_id=upload_id, document_id=hashlib.sha256(data).hexdigest(), key=key, source=key)
    ctx.blobs.put(job.key, data)
    ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.RECEIVED))
    workers.accept(job)
    return job


def test_a_document_that_kills_its_worker_fails_alone_not_the_queue_behind_it(settings: Settings) -> None:
    workers = LocalWorkers(settings, workers=1, max_attempts=2, work=_crash_on_bad)
    ctx = build_context(settings)
    try:
        bad = _accept(settings, workers, ctx, "bad", text_pdf([LETTER]))
        # queued behind it: each crash breaks the pool under them too, twice
        good = [_accept(settings, workers, ctx, f"good{i}", text_pdf([text])) for i, text in enumerate((MEMO, EMAIL))]
        assert workers.wait_idle(timeout=240)
        for job in good:
            record = ctx.records.get_document(job.document_id)
            assert record is not None and record.status in (Status.CLASSIFIED, Status.NEEDS_REVIEW), record
            assert [u.status for u in ctx.records.list_uploads(job.document_id)] == [record.status]
        record = ctx.records.get_document(bad.document_id)
        assert record is not None and record.status == Status.FAILED, record
        assert record.code == "Interrupted" and "(2 attempt(s))" in (record.reason or ""), record
        assert [u.status for u in ctx.records.list_uploads(bad.document_id)] == [Status.FAILED]
        assert workers.journaled() == []
        assert not list(workers.journal_dir.glob("*.started")), "a start marker is left"
    finally:
        workers.shutdown(grace=5)


def _stuck_on_slow(job: PendingUpload) -> WorkResult:
    """A document that outlasts any shutdown grace period (a page OCR cannot finish)."""
    if job.upload_id == "slow":
        time.sleep(600)
    return _work(job)


def test_shutdown_stops_a_worker_still_busy_after_the_grace_period(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    workers = LocalWorkers(settings, workers=1, max_attempts=2, work=_stuck_on_slow)
    ctx = build_context(settings)
    slow = _accept(settings, workers, ctx, "slow", text_pdf([LETTER]))
    deadline = time.monotonic() + 60
    while not (workers.journal_dir / "slow.started").exists():  # the worker has the document
        assert time.monotonic() < deadline, "the worker never started the document"
        time.sleep(0.05)
    started = time.monotonic()
    with caplog.at_level("INFO"):
        workers.shutdown(grace=1)  # raised AttributeError once the pool was shut down
    assert time.monotonic() - started < 15
    assert "workers stopped: 0 finished, 1 interrupted" in caplog.text
    assert [job.upload_id for job in workers.journaled()] == ["slow"]  # re-run at the next start
    assert [u.status for u in ctx.records.list_uploads(slow.document_id)] == [Status.FAILED]
    record = ctx.records.get_document(slow.document_id)
    assert record is not None and record.status == Status.FAILED and "server stopped" in (record.reason or "")


def test_shutdown_does_not_spend_the_grace_period_on_queued_uploads(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    workers = LocalWorkers(settings, workers=1, max_attempts=2)
    ctx = build_context(settings)
    jobs = [_accept(settings, workers, ctx, f"q{i}", text_pdf([f"{MEMO}\nnumber {i}"])) for i in range(6)]
    started = time.monotonic()
    with caplog.at_level("INFO"):
        workers.shutdown(grace=30)  # the one or two in flight take a second; the rest wait in the journal
    assert time.monotonic() - started < 15, "it waited out the grace period"
    queued = int(caplog.text.split(" queued for the next start")[0].rsplit(" ", 1)[-1])
    assert queued >= 3 and len(workers.journaled()) >= queued
    assert {job.upload_id for job in workers.journaled()} <= {job.upload_id for job in jobs}


def test_an_upload_no_worker_can_start_for_is_refused_and_not_journaled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_supervisor import _no_process

    workers = LocalWorkers(settings, workers=1, max_attempts=2)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(ProcessPoolExecutor, "_adjust_process_count", _no_process)
            with pytest.raises(WorkersUnavailableError, match=r"no worker process could be started.*memory"):
                _accept_scan(settings, workers)
        # refused, so the client retries: nothing left for the next start to run behind its back
        assert workers.journaled() == [] and workers.pending() == 0
        job, ctx = _accept_scan(settings, workers)  # workers can start again: the same upload is taken
        assert workers.wait_idle(timeout=120)
        assert ctx.records.get_document(job.document_id).status in (Status.CLASSIFIED, Status.NEEDS_REVIEW)
    finally:
        workers.shutdown(grace=5)


def test_a_start_that_cannot_start_workers_keeps_the_journal_for_the_next(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_supervisor import _no_process

    ctx = build_context(settings)
    data = text_pdf([f"{MEMO}\nkept"])
    job = PendingUpload(
        upload_id="kept", document_id=hashlib.sha256(data).hexdigest(), key="incoming/kept/memo.pdf", source="kept"
    )
    ctx.blobs.put(job.key, data)
    workers = LocalWorkers(settings, workers=1, max_attempts=2)
    workers._write_journal(job)  # accepted before the last stop
    try:
        with monkeypatch.context() as patched:
            patched.setattr(ProcessPoolExecutor, "_adjust_process_count", _no_process)
            assert workers.start() == 0  # the server still starts; the upload is not lost
        assert [j.upload_id for j in workers.journaled()] == ["kept"]
        assert workers.start() == 1
        assert workers.wait_idle(timeout=120)
        assert ctx.records.get_document(job.document_id).status in (Status.CLASSIFIED, Status.NEEDS_REVIEW)
    finally:
        workers.shutdown(grace=5)
