"""What happens to an accepted upload after the 202.

On AWS nothing here runs: the object landing under incoming/ fires the EventBridge rule that starts the
state machine. Locally (`docflow serve`) `LocalWorkers` runs each upload through the embedded Runner in a
bounded pool of worker processes (pipeline/supervisor.py, the same supervisor as `docflow process`), and keeps
a journal — one small file per accepted upload under DOCFLOW_HOME/api/queue, written
before the 202 and removed once the upload has a terminal status — so a server that stops (or dies)
finishes the rest when it starts again. Nothing accepted is lost.

Lazy imports: the pipeline's steps (docflow.pipeline.runner, .steps) are imported where they run, not
here: the API's Lambda imports this module and never runs the pipeline (a few ms of its cold start).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, ValidationError

from docflow import telemetry
from docflow.context import StepContext, build_context
from docflow.pipeline.state import DocumentRef, PipelineState, StepError
from docflow.pipeline.supervisor import JobHandler, Supervisor, worker_context
from docflow.records import UploadRecord
from docflow.settings import Settings
from docflow.values import Status, utcnow

log = logging.getLogger(__name__)

# What a worker hands back: the upload's terminal status, and the signals it emitted on the way.
WorkResult = tuple[Status, list[telemetry.Emission]]


class PendingUpload(BaseModel):
    """An accepted upload not yet known to have a terminal status (one journal file)."""

    upload_id: str
    document_id: str
    key: str
    source: str
    accepted_at: datetime = Field(default_factory=utcnow)
    attempts: int = 0


class QueueFullError(Exception):
    """More uploads are waiting than the server agreed to hold (ApiSettings.api_max_queue)."""


class StoppingError(Exception):
    """The server is shutting down and takes no new work."""


class WorkersUnavailableError(Exception):
    """No worker process could be started to take an upload (out of memory, a process limit): refused, so
    that the client retries, rather than accepted and left to nobody."""


class Submitter(Protocol):
    def check_room(self) -> None:
        """Raise StoppingError or QueueFullError if an upload would be refused now (before anything is stored)."""

    def accept(self, job: PendingUpload) -> None:
        """Take responsibility for the upload reaching a terminal status (called before the 202)."""


class S3Trigger:
    """AWS: the object under incoming/ already starts the state machine (EventBridge); nothing to do."""

    def check_room(self) -> None:
        return None

    def accept(self, job: PendingUpload) -> None:
        return None


# -- the domain step: one accepted upload to its terminal status ----------------------------------------


def _ref(job: PendingUpload) -> DocumentRef:
    return DocumentRef(key=job.key, source=job.source)


def record_interrupted(job: PendingUpload, ctx: StepContext, why: str) -> None:
    """Record the upload FAILED (its document too, when this upload owns it): a stopped server leaves a
    terminal status, and the rerun at the next start is then the user's retry of a failed document."""
    from docflow.pipeline.steps import record_failure_step

    record_failure_step(
        PipelineState(
            ref=_ref(job),
            document_id=job.document_id,
            proceed=_owns_document(job, ctx),
            error=StepError(Error="Interrupted", Cause=why),
        ),
        ctx,
    )


def _owns_document(job: PendingUpload, ctx: StepContext) -> bool:
    record = ctx.records.get_document(job.document_id)
    return record is None or record.source == job.source


def process_upload(job: PendingUpload, ctx: StepContext) -> Status:
    """Run one accepted upload through the pipeline; return its upload's terminal status."""
    # Imported here: the API's Lambda imports this module, and never runs the pipeline (nor loads Pillow/pdfium).
    from docflow.pipeline.runner import Runner

    record = ctx.records.get_document(job.document_id)
    if record is not None and not record.status.terminal and record.source == job.source:
        # Only this job processes this upload, so a PROCESSING record of ours is a run the server
        # never finished: without this the rerun would be taken for a redelivery and left as is.
        record_interrupted(job, ctx, "the server stopped while this document was being processed")
    state = Runner(ctx).run(_ref(job))
    status = state.status
    if state.replay and not status.terminal:  # a replay of a document still in progress: its status now
        replayed = ctx.records.get_document(job.document_id)
        status = replayed.status if replayed else status
    # The API wrote a RECEIVED upload record keyed by the content hash; make sure it ends terminal even
    # where the pipeline keys its own record differently (a failure before the hash was known) or
    # skipped writing it (a replay after a crash between the document and upload writes).
    mine = [u for u in ctx.records.list_uploads(job.document_id) if u.source == job.source]
    if not mine or not mine[0].status.terminal:
        ctx.records.put_upload(
            UploadRecord(
                document_id=job.document_id,
                source=job.source,
                status=status if status.terminal else Status.FAILED,
                duplicate_of=state.duplicate_of,
            )
        )
    return status


def _work(job: PendingUpload) -> WorkResult:
    """One upload in a worker; its signals come back with the status, for the server's /metrics."""
    with telemetry.recording() as signals:
        status = process_upload(job, worker_context())
    return status, signals


Work = Callable[[PendingUpload], WorkResult]


# -- the local pool and its journal ----------------------------------------------------------------------


class LocalWorkers(JobHandler[PendingUpload, WorkResult]):
    """A bounded pool of pipeline workers (pipeline/supervisor.py) with a journal on disk.

    workers >= 1: that many processes (spawned, each with its own stores, ONNX session and Tesseract; OCR
    runs in parallel). workers == 0: one thread in this process (tests, debugging). `work` is what runs each
    upload in a worker (a module-level function, as a spawned process imports it by name).
    """

    def __init__(
        self,
        settings: Settings,
        workers: int,
        max_queue: int = 10_000,
        max_attempts: int = 2,
        journal_dir: Path | None = None,
        work: Work | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.settings = settings
        self.workers = workers
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.journal_dir = journal_dir or settings.home / "api" / "queue"
        self.work = work or _work  # looked up now, so that a test may replace the module's _work
        self._ctx = build_context(settings)  # the journal owner's own stores, for recording failures
        self._lock = threading.RLock()
        self._stopping = False
        self._supervisor = self._new_supervisor()

    def _new_supervisor(self) -> Supervisor[PendingUpload, WorkResult]:
        return Supervisor(
            settings=self.settings,
            workers=self.workers,
            work=self.work,
            key=lambda job: job.upload_id,
            handler=self,
            marks=self.journal_dir,
            max_attempts=self.max_attempts,
        )

    # journal

    def _journal_path(self, upload_id: str) -> Path:
        return self.journal_dir / f"{upload_id}.json"

    def _write_journal(self, job: PendingUpload) -> None:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.journal_dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(job.model_dump_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._journal_path(job.upload_id))

    def _forget(self, job: PendingUpload) -> None:
        self._journal_path(job.upload_id).unlink(missing_ok=True)

    def journaled(self) -> list[PendingUpload]:
        jobs = []
        for path in sorted(self.journal_dir.glob("*.json")) if self.journal_dir.is_dir() else []:
            try:
                jobs.append(PendingUpload.model_validate_json(path.read_text()))
            except (OSError, ValidationError) as exc:
                log.error("unreadable journal entry %s: %s", path, exc)
        return sorted(jobs, key=lambda j: j.accepted_at)

    # the pool

    def start(self) -> int:
        """Re-queue what the journal holds; return how many were re-queued."""
        with self._lock:
            if self._stopping:
                self._stopping = False
                self._supervisor = self._new_supervisor()
            pending = [j for j in self.journaled() if j.upload_id not in self._supervisor]
            queued = 0
            for job in pending:
                try:
                    self._submit(job)
                    queued += 1
                except Exception as exc:  # no worker could start for it: it stays journaled for the next start
                    log.error("could not re-queue upload %s (kept for the next start): %s", job.upload_id, exc)
        if queued:
            log.warning("re-queued %d upload(s) accepted before the last stop", queued)
        return queued

    def check_room(self) -> None:
        with self._lock:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:
        if self._stopping:
            raise StoppingError("the server is shutting down")
        if self._supervisor.pending() >= self.max_queue:
            raise QueueFullError(f"{self._supervisor.pending()} uploads are waiting")

    def accept(self, job: PendingUpload) -> None:
        with self._lock:
            self._refuse_if_full()
            self._write_journal(job)
            try:
                self._submit(job)
            except Exception as exc:  # the supervisor did not take it: neither does the journal
                self._forget(job)
                log.error("no worker could take upload %s: %s", job.upload_id, exc)
                raise WorkersUnavailableError(f"no worker process could be started: {exc}") from exc

    def _submit(self, job: PendingUpload) -> None:
        self._supervisor.submit(job, deaths=job.attempts)

    def worker_pids(self) -> list[int]:
        return self._supervisor.worker_pids()

    # each upload's end (JobHandler: called by the supervisor)

    def finished(self, job: PendingUpload, result: WorkResult) -> None:
        telemetry.replay(result[1])
        self._forget(job)

    def failed(self, job: PendingUpload, exc: BaseException) -> None:
        log.error("upload %s failed outside the pipeline: %r", job.upload_id, exc)
        self._record(job, f"processing failed: {type(exc).__name__}", forget=True)

    def charged(self, job: PendingUpload, deaths: int) -> None:
        # Its worker died while it ran: remembered in the journal, so a server killed now still counts it.
        self._write_journal(job.model_copy(update={"attempts": deaths}))

    def gave_up(self, job: PendingUpload, deaths: int, ran: bool) -> None:
        why = f"the worker processing this document stopped unexpectedly ({deaths} attempt(s))"
        self._record(job, why, forget=True)

    def interrupted(self, job: PendingUpload) -> None:
        why = "the server stopped while this document was being processed; it is retried when the server starts again"
        self._record(job, why, forget=False)

    def _record(self, job: PendingUpload, why: str, forget: bool) -> None:
        try:
            record_interrupted(job, self._ctx, why)
        except Exception:  # the store itself is down: keep the journal entry, the next start retries
            log.exception("could not record upload %s as failed", job.upload_id)
            return
        if forget:
            self._forget(job)

    def pending(self) -> int:
        return self._supervisor.pending()

    def wait_idle(self, timeout: float) -> bool:
        return self._supervisor.wait_idle(timeout)

    def shutdown(self, grace: float) -> None:
        """Take no new work; let documents in flight finish for up to `grace` seconds; record the rest.

        Queued uploads that never started stay in the journal and run at the next start. Workers still busy
        after the grace period are stopped, and their documents recorded FAILED (and re-run at the next start).
        """
        with self._lock:
            self._stopping = True
        finished, interrupted, queued = self._supervisor.shutdown(grace)
        log.info(
            "workers stopped: %d finished, %d interrupted, %d queued for the next start",
            finished,
            interrupted,
            queued,
        )
