"""One supervisor of pipeline worker processes, for `docflow process` (pipeline/embedded.py) and `docflow serve`
(api/worker.py): the worker's start-up, the spawn pool, and what happens when a worker dies.

A worker process that dies (killed, out of memory, a crash in a native library) takes its pool down: every job
of that pool fails with BrokenProcessPool. The supervisor then tells the jobs that had started (one of them did
it) from those still queued (which did nothing wrong), by a start marker each job leaves while it runs:

- In a pool of several workers, the jobs that had started run again *alone*, on a pool of one, free of charge:
  any of them may have done it.
- In a pool of one, a death is the running job's own: it is charged; at ``max_attempts`` deaths the job's owner
  is told it gave up (``JobHandler.gave_up``), else it runs again alone.
- Jobs that had not started run again on a fresh pool, free of charge.
- If no job had started, the workers cannot even start: every job is charged, so a pool that can run nothing
  is not restarted forever.

Each document runs with ``OMP_THREAD_LIMIT=1`` (Tesseract's threads thrash on small machines; parallelism is
across documents), ignores Ctrl-C (the parent decides what stops), holds the run lock shared (its document in
flight is never taken for an orphan, even if the parent is killed), and loads the model before its first job.

A little over 400 lines on purpose: the pool, its workers' start-up and stop, and the rules above for who pays
for a death are one piece of concurrency that is read and changed together; split, each rule would lean on
state kept in another file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Generic, TypeVar

from docflow.context import StepContext, build_context
from docflow.pipeline.run_lock import hold_run_lock
from docflow.settings import Settings

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

# -- the worker process -------------------------------------------------------------------------------------

_worker_ctx: StepContext | None = None


def init_worker(settings: Settings, orphans_before: datetime | None = None) -> None:
    """Set up this process to run documents: its own stores, ONNX session and Tesseract settings."""
    global _worker_ctx
    os.environ["OMP_THREAD_LIMIT"] = "1"
    _worker_ctx = build_context(settings)
    _worker_ctx.orphans_before = orphans_before
    _warm_up(_worker_ctx)


_parent: int | None = None  # a pool worker's parent, as it was when the worker started
_busy = threading.Event()  # set while a pool worker runs a job


def _init_pool_worker(settings: Settings, orphans_before: datetime | None) -> None:
    global _parent
    # Ctrl-C on a terminal reaches the whole process group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hold_run_lock(settings)
    _parent = os.getppid()
    threading.Thread(target=_end_when_orphaned, name="docflow-orphan-watch", daemon=True).start()
    init_worker(settings, orphans_before)


def _parent_gone() -> bool:
    return _parent is not None and os.getppid() != _parent


def _end_when_orphaned() -> None:
    """A worker whose parent was killed (kill -9, out of memory) would wait for work forever, holding its memory
    and the run lock: once idle, it ends. A job it is running is finished first (``_run_marked``)."""
    while True:
        time.sleep(1.0)
        if _parent_gone() and not _busy.is_set():
            os._exit(0)


def worker_context() -> StepContext:
    assert _worker_ctx is not None, "worker not initialised (init_worker)"
    return _worker_ctx


def _warm_up(ctx: StepContext) -> None:
    """Load what documents need before the first one arrives (the model's onnxruntime session and tokenizer,
    the image and PDF engines), once per worker: a document's time is then its own work, not start-up."""
    try:
        # Imported here, and that is the point: each worker loads the engines before its first document.
        import docflow.domain.extraction
        import docflow.domain.validation  # noqa: F401

        ctx.classifier()
    except Exception:  # the document that needs it fails with the cause, as a row; never the whole pool
        return


# Exit codes of a worker stopped by a signal meant for the whole process group, not by its job.
_STOP_SIGNALS = frozenset({-signal.SIGTERM, -signal.SIGHUP, -signal.SIGINT})
STOPPING_MARK = ".stopping"  # in the marks folder while the supervisor stops: no job starts any more
# A hand-over (one submit of a job to a pool) is ".handing-<id>" while the submit runs; a worker that takes the
# job meanwhile waits. A submit that returns removes it; one that raises renames it ".withdrawn-<id>" (a job
# queued by a submit that failed, never to run). The rename is atomic: a worker sees one or the other.
HANDING_PREFIX = ".handing-"
WITHDRAWN_PREFIX = ".withdrawn-"


class NotStarted(Exception):
    """A job a worker took from the queue after its supervisor began to stop: it was not run."""


def _run_marked(work: Callable[[J], R], job: J, mark: str, handover: str) -> R:
    """In the worker: leave the start marker while the job runs (a death leaves it behind). Not run once the
    supervisor stops, nor when its hand-over was withdrawn (see ``Supervisor._hand_to``)."""
    path = Path(mark)
    handing = Path(handover)
    while handing.exists():  # the submit that queued this job has not returned yet: it may still fail
        if _parent_gone():
            raise NotStarted(path.name)
        time.sleep(0.002)
    withdrawn = handing.with_name(WITHDRAWN_PREFIX + handing.name.removeprefix(HANDING_PREFIX))
    if (path.parent / STOPPING_MARK).exists() or withdrawn.exists():
        raise NotStarted(path.name)
    _busy.set()
    path.touch()
    try:
        return work(job)
    finally:
        path.unlink(missing_ok=True)
        _busy.clear()
        if _parent_gone():  # nobody is left to take the result: end rather than wait for work forever
            os._exit(0)


def worker_processes(pool: Executor) -> list[BaseProcess]:
    """A process pool's worker processes, to end busy ones: no public way before Python 3.14's
    terminate_workers(). Take them before shutdown(), which sets the pool's _processes to None."""
    return list((getattr(pool, "_processes", None) or {}).values())


# -- the supervisor -----------------------------------------------------------------------------------------


class JobHandler(Generic[J, R]):
    """What the supervisor's owner does with each job's end. Called on the supervisor's threads, one at a time."""

    def finished(self, job: J, result: R) -> None:
        """The work returned."""

    def failed(self, job: J, exc: BaseException) -> None:
        """The work raised (its own error, not a death)."""

    def charged(self, job: J, deaths: int) -> None:
        """A death was counted against the job (it runs again unless ``gave_up`` follows)."""

    def gave_up(self, job: J, deaths: int, ran: bool) -> None:
        """The job's worker died ``deaths`` times: it will not run again. ``ran``: whether it was running
        (False: no worker could even start)."""

    def interrupted(self, job: J) -> None:
        """The supervisor was stopping when the job's worker was stopped."""


@dataclass
class _Entry(Generic[J]):
    key: str
    job: J
    deaths: int = 0
    alone: bool = False  # runs on the pool of one


@dataclass(eq=False)
class _Pool:
    executor: Executor
    size: int


class Supervisor(Generic[J, R]):
    """Runs jobs on spawned worker processes (``workers`` of them, plus a pool of one for jobs that must run
    alone), and survives their deaths as the module says. ``workers == 0``: one thread in this process (tests,
    debugging; nothing can die). ``work`` runs in the worker: a module-level function, as a spawned process
    imports it by name; it reaches the worker's context with ``worker_context()``."""

    def __init__(
        self,
        *,
        settings: Settings,
        workers: int,
        work: Callable[[J], R],
        key: Callable[[J], str],
        handler: JobHandler[J, R],
        marks: Path,
        max_attempts: int = 2,
        orphans_before: datetime | None = None,
        mark_suffix: str = ".started",
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.settings = settings
        self.workers = workers
        self.work = work
        self.key = key
        self.handler = handler
        self.marks = marks
        self.max_attempts = max_attempts
        self.orphans_before = orphans_before
        self.mark_suffix = mark_suffix
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._main: _Pool | None = None
        self._alone: _Pool | None = None
        self._entries: dict[str, _Entry[J]] = {}  # every job not yet ended, running, queued or being settled
        self._futures: dict[str, tuple[Future[R], _Pool]] = {}  # the current attempt of each
        self.stopping = False
        (marks / STOPPING_MARK).unlink(missing_ok=True)  # left by an earlier supervisor's stop
        self._interrupted = self._never_started = 0  # jobs whose worker was stopped with the supervisor

    # submitting

    def submit(self, job: J, deaths: int = 0) -> None:
        """Run ``job``; its end reaches the handler. Raises what handing it to a pool raised (a worker process
        that could not be started: out of memory, a process limit): the job is then not this supervisor's, and
        its caller still owns it."""
        with self._lock:
            entry = _Entry(self.key(job), job, deaths)
            self._entries[entry.key] = entry
            try:
                self._submit(entry)
            except BaseException:
                self._entries.pop(entry.key, None)
                raise

    def _mark(self, key: str) -> Path:
        return self.marks / f"{key}{self.mark_suffix}"

    def _pool(self, alone: bool) -> _Pool:
        if alone:
            if self._alone is None:
                self._alone = self._new_pool(1)
            return self._alone
        if self._main is None:
            self._main = self._new_pool(self.workers)
        return self._main

    def _new_pool(self, size: int) -> _Pool:
        if self.workers == 0:
            init_worker(self.settings, self.orphans_before)
            return _Pool(ThreadPoolExecutor(max_workers=1, thread_name_prefix="docflow-worker"), 0)
        # spawn, not fork: a forked worker inherits the parent's open SQLite connection, and when the child
        # closes it, POSIX drops every lock the child holds on the file: concurrent writes are then lost
        # (tests/e2e/test_scale.py saw ~2 % of 300 documents vanish with fork); and the server runs threads
        # and an event loop, which a fork would copy half-way.
        executor = ProcessPoolExecutor(
            max_workers=size,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_pool_worker,
            initargs=(self.settings, self.orphans_before),
        )
        return _Pool(executor, size)

    def _submit(self, entry: _Entry[J]) -> None:
        mark = self._mark(entry.key)
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.unlink(missing_ok=True)
        pool = self._pool(entry.alone and self.workers > 0)
        try:
            future = self._hand_to(pool, entry.job, mark)
        except (BrokenProcessPool, RuntimeError):  # broke (or was shut down for it) before this job went in
            self._forget_pool(pool)
            pool = self._pool(entry.alone and self.workers > 0)
            future = self._hand_to(pool, entry.job, mark)
        self._futures[entry.key] = (future, pool)
        future.add_done_callback(lambda f: self._done(entry, f, pool))

    def _hand_to(self, pool: _Pool, job: J, mark: Path) -> Future[R]:
        """``job`` into ``pool``'s queue. A process pool queues the job, then starts a worker for it: when that
        start fails (out of memory, a process limit) the job may already be in the queue, with no future anyone
        holds, and a worker that was there may take it. So a worker waits while the submit runs, and a submit
        that raises withdraws its hand-over: the job never runs unseen (the files: HANDING_PREFIX)."""
        handover = uuid.uuid4().hex
        handing = self.marks / f"{HANDING_PREFIX}{handover}"
        handing.touch()
        try:
            future = pool.executor.submit(_run_marked, self.work, job, str(mark.absolute()), str(handing.absolute()))
        except BaseException:
            os.replace(handing, self.marks / f"{WITHDRAWN_PREFIX}{handover}")
            raise
        handing.unlink()
        return future

    def _forget_pool(self, pool: _Pool) -> None:
        if pool is self._main:
            self._main = None
        if pool is self._alone:
            self._alone = None

    # ends

    def _done(self, entry: _Entry[J], future: Future[R], pool: _Pool) -> None:
        with self._lock:
            current = self._futures.get(entry.key)
            if current is None or current[0] is not future:
                return  # an attempt already settled with its broken pool
            del self._futures[entry.key]
            try:
                if future.cancelled():  # never started (stopping): its owner brings it back
                    self._end(entry)
                    return
                exc = future.exception()
                if isinstance(exc, NotStarted):  # taken from the queue as the supervisor stopped: not run
                    self._end(entry)
                    self._never_started += 1
                elif exc is None:
                    self._end(entry)
                    self.handler.finished(entry.job, future.result())
                elif not isinstance(exc, BrokenProcessPool):
                    self._end(entry)
                    self.handler.failed(entry.job, exc)
                elif self.stopping:
                    self._end(entry)
                    self._stopped(entry, self._mark(entry.key).exists())
                else:
                    self._pool_broke(entry, pool)
            finally:
                self._idle.notify_all()

    def _end(self, entry: _Entry[J]) -> None:
        self._entries.pop(entry.key, None)

    def _stopped(self, entry: _Entry[J], started: bool) -> None:
        """Its worker was stopped with the supervisor. A job handed to the worker but not started yet is ended
        as a queued one (its owner brings it back); a running one is ``interrupted``."""
        self._mark(entry.key).unlink(missing_ok=True)
        if started:
            self._interrupted += 1
            self.handler.interrupted(entry.job)
        else:
            self._never_started += 1

    def _pool_broke(self, entry: _Entry[J], pool: _Pool) -> None:
        """The first of a broken pool's jobs to settle: take all its jobs (the others' callbacks then find their
        attempt settled), and judge them once its workers are gone: they are stopped only after every job has
        failed, and until then one could still touch a marker."""
        self._forget_pool(pool)
        entries = [entry]
        for key, (_, owner) in list(self._futures.items()):
            if owner is pool:
                del self._futures[key]
                entries.append(self._entries[key])
        log.error("a pipeline worker died; restarting its pool")
        processes = worker_processes(pool.executor)  # before the pool forgets them: how each one ended
        args = (pool, entries, processes)
        threading.Thread(target=self._judge_once_exited, args=args, name="docflow-broken-pool", daemon=True).start()

    def _judge_once_exited(self, pool: _Pool, entries: list[_Entry[J]], processes: list[BaseProcess]) -> None:
        pool.executor.shutdown(wait=True)
        # A stop signal sent to every process (a service manager stopping the group) is no job's fault: in a pool
        # of one, where a death is otherwise the running job's own, it is not charged.
        signalled = pool.size == 1 and any(p.exitcode in _STOP_SIGNALS for p in processes)
        with self._lock:
            try:
                self._judge(pool, entries, signalled)
            except Exception:  # never lose a job silently: each ends failed
                log.exception("could not judge the jobs of a broken pool")
                for entry in entries:
                    if entry.key in self._entries and entry.key not in self._futures:
                        self._end(entry)
                        self.handler.failed(entry.job, BrokenProcessPool("the worker pool broke"))
            finally:
                self._idle.notify_all()

    def _judge(self, pool: _Pool, entries: list[_Entry[J]], signalled: bool = False) -> None:
        started = set()
        for entry in entries:
            mark = self._mark(entry.key)
            if mark.exists():
                started.add(entry.key)
                mark.unlink(missing_ok=True)
        if self.stopping:
            for entry in entries:
                self._end(entry)
                self._stopped(entry, entry.key in started)
            return
        again_alone = 0
        for entry in entries:
            if signalled:  # stopped from outside: runs again as it was, free
                pass
            elif not started or (entry.key in started and pool.size == 1):
                # none started: the workers cannot start; alone: the death was this job's own
                entry.deaths += 1
                self.handler.charged(entry.job, entry.deaths)
                if entry.deaths >= self.max_attempts:
                    self._end(entry)
                    self.handler.gave_up(entry.job, entry.deaths, ran=bool(started))
                    continue
            elif entry.key in started:  # any of those running may have done it: each runs again alone, free
                entry.alone = True
            again_alone += entry.alone
            self._submit(entry)
        log.warning(
            "a worker process died; %d document(s) to run again (%d of them alone)",
            sum(1 for e in entries if e.key in self._futures),
            again_alone,
        )

    # waiting and stopping

    def pending(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether the job of this key has not ended yet."""
        with self._lock:
            return key in self._entries

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: not self._entries, timeout=timeout)

    def worker_pids(self) -> list[int]:
        with self._lock:
            pools = [p for p in (self._main, self._alone) if p is not None]
        return [p.pid for pool in pools for p in worker_processes(pool.executor) if p.pid is not None]

    def shutdown(self, grace: float) -> tuple[int, int, int]:
        """Take no new work; let jobs in flight finish for up to ``grace`` seconds; stop the workers still busy
        (their running jobs are ``interrupted``). Queued jobs are cancelled and ended without a word: their
        owner brings them back. Returns how many jobs (finished, were interrupted, were queued)."""
        with self._lock:
            self.stopping = True
            self.marks.mkdir(parents=True, exist_ok=True)
            (self.marks / STOPPING_MARK).touch()  # a job a worker takes from its queue from now on is not run
            pools = [p for p in (self._main, self._alone) if p is not None]
            self._main = self._alone = None
            running = [f for f, _ in self._futures.values()]
        processes = [p for pool in pools for p in worker_processes(pool.executor)]
        for pool in pools:
            pool.executor.shutdown(wait=False, cancel_futures=True)
        # shutdown() leaves the cancelling to the pool's own thread, later: cancel the queued ones here. A
        # CANCELLED future is not done for wait(), so they are left out of it too, or the grace is spent on them.
        queued = sum(1 for f in running if f.cancel())
        done, not_done = wait_futures([f for f in running if not f.cancelled()], timeout=grace)
        if not_done or self.pending():  # busy past the grace (or running work this supervisor lost track of)
            for process in processes:
                process.terminate()
            wait_futures(not_done, timeout=10)
        for process in processes:
            process.join(timeout=10)
        # A future's done-callbacks (an interrupted job's record) run after its waiters wake: wait for them too.
        self.wait_idle(timeout=10)
        (self.marks / STOPPING_MARK).unlink(missing_ok=True)
        for withdrawn in self.marks.glob(f"{WITHDRAWN_PREFIX}*"):  # their pools are gone: nothing runs them now
            withdrawn.unlink(missing_ok=True)
        finished = sum(1 for f in done if f.exception() is None)
        with self._lock:
            return finished, self._interrupted, queued + self._never_started
