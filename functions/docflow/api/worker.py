"""What happens to an accepted upload after the 202.

On AWS nothing here runs: the object landing under incoming/ fires the EventBridge rule that starts the
state machine. Locally (`docflow serve`) `LocalWorkers` runs each upload through the embedded Runner in a
bounded pool, and keeps a journal — one small file per accepted upload under DOCFLOW_HOME/api/queue, written
before the 202 and removed once the upload has a terminal status — so a server that stops (or dies)
finishes the rest when it starts again. Nothing accepted is lost.

Lazy imports: the pipeline (docflow.pipeline.runner, .steps and .embedded) is imported where it runs, not
here: the API's Lambda imports this module and never runs the pipeline (a few ms of its cold start).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import tempfile
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, ValidationError

from docflow import telemetry
from docflow.context import StepContext, build_context
from docflow.pipeline.state import DocumentRef, PipelineState, StepError
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


_worker_ctx: StepContext | None = None


def _init_worker(settings: Settings) -> None:
    global _worker_ctx
    from docflow.pipeline.run_lock import hold_run_lock

    os.environ["OMP_THREAD_LIMIT"] = "1"
    hold_run_lock(settings)  # its document in flight is not an orphan, even if the server was killed
    _worker_ctx = build_context(settings)


def _work(job: PendingUpload) -> WorkResult:
    """One upload in a worker; its signals come back with the status, for the server's /metrics."""
    assert _worker_ctx is not None, "worker not initialised"
    with telemetry.recording() as signals:
        status = process_upload(job, _worker_ctx)
    return status, signals


Work = Callable[[PendingUpload], WorkResult]


def _run_started(work: Work, job: PendingUpload, started: str) -> WorkResult:
    """Leave a start marker, then work: when a worker dies and breaks the pool, the marker tells the jobs
    that were running (one of them killed it) from those still queued (which did nothing wrong)."""
    Path(started).touch()
    return work(job)


# -- the local pool and its journal ----------------------------------------------------------------------


class LocalWorkers:
    """A bounded pool of pipeline workers with a journal on disk.

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
        work: Work = _work,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.settings = settings
        self.workers = workers
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.journal_dir = journal_dir or settings.home / "api" / "queue"
        self.work = work
        self._ctx = build_context(settings)  # the journal owner's own stores, for recording failures
        self._lock = threading.RLock()
        self._pool: Executor | None = None
        self._inflight: dict[str, Future[WorkResult]] = {}
        self._pool_of: dict[str, Executor] = {}  # the pool each job in flight was submitted to
        self._stopping = False
        self._idle = threading.Condition(self._lock)
        # For each pool that broke: whether any of its jobs had started (see _finish).
        self._broke_running: weakref.WeakKeyDictionary[Executor, bool] = weakref.WeakKeyDictionary()

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

    def _started_path(self, upload_id: str) -> Path:
        return self.journal_dir / f"{upload_id}.started"

    def journaled(self) -> list[PendingUpload]:
        jobs = []
        for path in sorted(self.journal_dir.glob("*.json")) if self.journal_dir.is_dir() else []:
            try:
                jobs.append(PendingUpload.model_validate_json(path.read_text()))
            except (OSError, ValidationError) as exc:
                log.error("unreadable journal entry %s: %s", path, exc)
        return sorted(jobs, key=lambda j: j.accepted_at)

    # pool

    def _new_pool(self) -> Executor:
        if self.workers == 0:
            _init_worker(self.settings)
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="docflow-worker")
        # spawn, not fork: this process runs an event loop and threads, which a fork would copy half-way.
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.settings,),
        )

    def start(self) -> int:
        """Open the pool and re-queue what the journal holds; return how many were re-queued."""
        with self._lock:
            self._stopping = False
            if self._pool is None:
                self._pool = self._new_pool()
            pending = [j for j in self.journaled() if j.upload_id not in self._inflight]
            for job in pending:
                self._submit(job)
        if pending:
            log.warning("re-queued %d upload(s) accepted before the last stop", len(pending))
        return len(pending)

    def check_room(self) -> None:
        with self._lock:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:
        if self._stopping:
            raise StoppingError("the server is shutting down")
        if len(self._inflight) >= self.max_queue:
            raise QueueFullError(f"{len(self._inflight)} uploads are waiting")

    def accept(self, job: PendingUpload) -> None:
        with self._lock:
            self._refuse_if_full()
            if self._pool is None:
                self._pool = self._new_pool()
            self._write_journal(job)
            self._submit(job)

    def _submit(self, job: PendingUpload) -> None:
        assert self._pool is not None
        pool = self._pool
        started = self._started_path(job.upload_id)
        started.unlink(missing_ok=True)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        future = pool.submit(_run_started, self.work, job, str(started.absolute()))
        self._inflight[job.upload_id] = future
        self._pool_of[job.upload_id] = pool
        future.add_done_callback(lambda f: self._done(job, f, pool))

    def _done(self, job: PendingUpload, future: Future[WorkResult], pool: Executor) -> None:
        with self._lock:
            try:
                self._finish(job, future, pool)
            finally:
                if self._inflight.get(job.upload_id) is future:
                    del self._inflight[job.upload_id]
                    del self._pool_of[job.upload_id]
                self._idle.notify_all()

    def _finish(self, job: PendingUpload, future: Future[WorkResult], pool: Executor) -> None:
        started = self._started_path(job.upload_id)
        was_started = started.exists()
        started.unlink(missing_ok=True)
        if future.cancelled():
            return  # never started (shutdown): the journal entry brings it back at the next start
        exc = future.exception()
        if exc is None:
            telemetry.replay(future.result()[1])
            self._forget(job)
            return
        if isinstance(exc, BrokenProcessPool):
            if self._stopping:
                self._record(
                    job,
                    "the server stopped while this document was being processed; it is retried "
                    "when the server starts again",
                    forget=False,
                )
                return
            # A worker died (killed, out of memory, a crash in a native library) and took the pool with it.
            # Every job of that pool fails with it. Those that had started (one of them did it) pay an attempt;
            # those still queued are re-run on a fresh pool free of charge, so one bad document cannot use
            # up the attempts of the whole queue. If none had started (a worker that could not even start),
            # every job pays, so a pool that cannot run anything is not restarted forever.
            if pool is self._pool:
                log.error("a pipeline worker died; restarting the pool")
                self._pool = self._new_pool()
            if pool not in self._broke_running:  # the first of its jobs to settle: all are still in flight
                self._broke_running[pool] = was_started or any(
                    self._started_path(upload_id).exists()
                    for upload_id, owner in self._pool_of.items()
                    if owner is pool and upload_id != job.upload_id
                )
            if not was_started and self._broke_running[pool]:
                self._submit(job)
                return
            if job.attempts + 1 < self.max_attempts:
                retry = job.model_copy(update={"attempts": job.attempts + 1})
                self._write_journal(retry)
                self._submit(retry)
                return
            attempts = job.attempts + 1
            why = f"the worker processing this document stopped unexpectedly ({attempts} attempt(s))"
            self._record(job, why, forget=True)
            return
        log.error("upload %s failed outside the pipeline: %r", job.upload_id, exc)
        self._record(job, f"processing failed: {type(exc).__name__}", forget=True)

    def _record(self, job: PendingUpload, why: str, forget: bool) -> None:
        try:
            record_interrupted(job, self._ctx, why)
        except Exception:  # the store itself is down: keep the journal entry, the next start retries
            log.exception("could not record upload %s as failed", job.upload_id)
            return
        if forget:
            self._forget(job)

    def pending(self) -> int:
        with self._lock:
            return len(self._inflight)

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: not self._inflight, timeout=timeout)

    def shutdown(self, grace: float) -> None:
        """Take no new work; let documents in flight finish for up to `grace` seconds; record the rest.

        Queued uploads that never started stay in the journal and run at the next start. Workers still busy
        after the grace period are stopped, and their documents recorded FAILED (and re-run at the next start).
        """
        with self._lock:
            self._stopping = True
            pool, self._pool = self._pool, None
            running = list(self._inflight.values())
        if pool is None:
            return
        from docflow.pipeline.embedded import worker_processes

        processes = worker_processes(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        # shutdown() leaves the cancelling to the pool's own thread, later: cancel the queued uploads here
        # (their journal entries bring them back at the next start). A CANCELLED future is not done for
        # wait(), so they are left out of it too, or the grace is spent waiting for them.
        queued = sum(1 for f in running if f.cancel())
        done, not_done = wait_futures([f for f in running if not f.cancelled()], timeout=grace)
        if not_done:
            for process in processes:
                process.terminate()
            wait_futures(not_done, timeout=10)
        # A future's done-callbacks (_done: the FAILED record of an interrupted document) run after its
        # waiters wake: wait for them too, or the process may exit before the record is written.
        self.wait_idle(timeout=10)
        log.info(
            "workers stopped: %d finished, %d interrupted, %d queued for the next start",
            len(done),
            len(not_done),
            queued,
        )
