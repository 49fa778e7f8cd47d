"""The embedded default: documents from local paths through the pipeline on local stores, in parallel.

Each worker process builds its own StepContext (its own SQLite connection, ONNX session and Tesseract
subprocesses); documents, not pages, are the unit of parallelism.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

from docflow import telemetry
from docflow.context import StepContext, build_context
from docflow.settings import Settings

if TYPE_CHECKING:
    pass

from docflow.pipeline.inputs import DocumentResult, failed_row, process_file, worker_died_row
from docflow.pipeline.run_lock import hold_run_lock, holding_run_lock

logger = logging.getLogger(__name__)


_worker_ctx: StepContext | None = None


def _init_worker(settings: Settings, orphans_before: datetime | None = None) -> None:
    global _worker_ctx
    os.environ["OMP_THREAD_LIMIT"] = "1"
    _worker_ctx = build_context(settings)
    _worker_ctx.orphans_before = orphans_before
    _warm_up(_worker_ctx)


def _init_pool_worker(settings: Settings, orphans_before: datetime | None) -> None:
    # Ctrl-C on a terminal reaches the whole process group: the parent decides what stops (RunInterrupted).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hold_run_lock(settings)
    _init_worker(settings, orphans_before)


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


def _work(
    path: str, source: str, languages: str | None, started_mark: str | None = None, owner: str | None = None
) -> tuple[DocumentResult, list[telemetry.Emission]]:
    """One document; its signals come back with its row (worker processes have no sink of their own).
    ``started_mark``: a file created while the document runs, so that a pool broken by a worker's death
    can tell the documents it was running from those still queued. ``owner``: the same for every attempt
    at this document in this run (Runner.run)."""
    assert _worker_ctx is not None, "worker not initialised"
    mark = Path(started_mark) if started_mark else None
    if mark is not None:
        mark.touch()
    try:
        with telemetry.recording() as signals:
            result = process_file(Path(path), source, _worker_ctx, languages, owner)
    finally:
        if mark is not None:
            mark.unlink(missing_ok=True)
    return result, signals


def process_paths(
    files: list[tuple[Path, str]],
    settings: Settings,
    workers: int,
    on_result: Callable[[DocumentResult], None] | None = None,
    languages: str | None = None,
) -> list[DocumentResult]:
    """Run every (path, source) through the pipeline; results come back in input order."""
    with holding_run_lock(settings) as orphans_before:
        return _process_paths(files, settings, workers, on_result, languages, orphans_before)


class RunInterrupted(Exception):
    """Ctrl-C during a run: the rows of the documents that finished. The documents that were running are
    left unfinished on record; the next run on this state directory takes them over."""

    def __init__(self, results: list[DocumentResult], total: int) -> None:
        super().__init__(f"interrupted after {len(results)} of {total} documents")
        self.results = results
        self.total = total


# A worker process that dies (killed, out of memory, a crash in a native library) takes its pool down, and
# the pool stops its other workers too. The documents that were running are then run again one at a time,
# where a death is that document's own: dying alone this many times, it fails with that reason. The
# documents queued behind them are re-run without being charged.
MAX_ATTEMPTS = 2


def _process_paths(
    files: list[tuple[Path, str]],
    settings: Settings,
    workers: int,
    on_result: Callable[[DocumentResult], None] | None,
    languages: str | None,
    orphans_before: datetime | None,
) -> list[DocumentResult]:
    results: list[DocumentResult | None] = [None] * len(files)
    # One file named twice (the same path, or a link to it) runs once; each naming gets its row.
    first_of: dict[str, int] = {}
    also: dict[int, list[int]] = {}
    todo: list[int] = []
    for i, (path, _) in enumerate(files):
        real = os.path.realpath(path)
        if real in first_of:
            also.setdefault(first_of[real], []).append(i)
        else:
            first_of[real] = i
            todo.append(i)

    def done(i: int, result: DocumentResult, signals: list[telemetry.Emission]) -> None:
        telemetry.replay(signals)  # into this process's sink: exact counts whatever the pool did
        for j in (i, *also.get(i, ())):
            row = result if j == i else result.model_copy(update={"source": files[j][1]})
            results[j] = row
            if on_result:
                on_result(row)

    # Create the stores (SQLite schema, WAL) once here, before workers open them concurrently.
    build_context(settings)
    try:
        if workers <= 1 or len(todo) <= 1:
            _init_worker(settings, orphans_before)
            for i in todo:
                path, source = files[i]
                try:
                    result, signals = _work(str(path), source, languages)
                except Exception as exc:  # this document only (its file cannot be read): a row, as in the pool
                    result, signals = failed_row(source, exc), []
                done(i, result, signals)
        else:
            _run_in_pools(todo, files, settings, workers, languages, orphans_before, done)
    except KeyboardInterrupt:
        raise RunInterrupted([r for r in results if r is not None], len(files)) from None
    return [r for r in results if r is not None]


def _run_in_pools(
    todo: list[int],
    files: list[tuple[Path, str]],
    settings: Settings,
    workers: int,
    languages: str | None,
    orphans_before: datetime | None,
    done: Callable[[int, DocumentResult, list[telemetry.Emission]], None],
) -> None:
    """``todo`` on a pool of worker processes. When a worker dies and breaks the pool, the documents that
    had started run again alone (``rerun_alone``: a single-worker pool, so a death is the document's own and
    charged to it, MAX_ATTEMPTS), then the rest on a fresh pool."""
    deaths: Counter[int] = Counter()
    # A document run again after its worker died is the same delivery: its record is its own work.
    owners = {i: uuid.uuid4().hex for i in todo}
    queued, rerun_alone = list(todo), list[int]()
    with tempfile.TemporaryDirectory(prefix="docflow-run-") as marks:
        while queued or rerun_alone:
            alone = bool(rerun_alone)
            batch = rerun_alone if alone else queued
            size = 1 if alone else workers
            broken = _run_batch(batch, size, files, settings, languages, orphans_before, marks, owners, done)
            started = {i for i in broken if os.path.exists(os.path.join(marks, str(i)))}
            for i in broken:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(marks, str(i)))
            if started and not alone:  # any of those running may have done it: each runs again alone, free
                rerun_alone, queued = sorted(started), sorted(set(broken) - started)
            else:  # alone, the death is the running document's own; none started: the workers cannot start
                blamed = started or set(broken)
                charged = _count_worker_death(sorted(blamed), deaths, files, owners, settings, done, ran=bool(started))
                left = sorted((set(broken) - blamed) | set(charged))
                if alone:
                    rerun_alone = left
                else:
                    queued = left
            if broken:
                logger.warning(
                    "a worker process died; %d document(s) to run again (%d of them alone)",
                    len(rerun_alone) + len(queued),
                    len(rerun_alone),
                )


def _count_worker_death(
    docs: list[int],
    deaths: Counter[int],
    files: list[tuple[Path, str]],
    owners: dict[int, str],
    settings: Settings,
    done: Callable[[int, DocumentResult, list[telemetry.Emission]], None],
    ran: bool,
) -> list[int]:
    """Count a worker death against each of ``docs``; those at MAX_ATTEMPTS end FAILED. Returns the rest."""
    rest = []
    for i in docs:
        deaths[i] += 1
        if deaths[i] < MAX_ATTEMPTS:
            rest.append(i)
        elif ran:
            done(i, worker_died_row(files[i], owners[i], deaths[i], settings), [])
        else:  # it never ran: nothing of it is on record
            stopped = BrokenProcessPool(f"no worker process could start ({deaths[i]} tries)")
            done(i, failed_row(files[i][1], stopped, worker_stopped=True), [])
    return rest


def _run_batch(
    batch: list[int],
    workers: int,
    files: list[tuple[Path, str]],
    settings: Settings,
    languages: str | None,
    orphans_before: datetime | None,
    marks: str,
    owners: dict[int, str],
    done: Callable[[int, DocumentResult, list[telemetry.Emission]], None],
) -> list[int]:
    """One pool over ``batch``; returns the documents a broken pool did not finish."""
    # spawn, not fork: a forked worker inherits this process's open SQLite connection, and when the child
    # closes it, POSIX drops every lock the child holds on the file: concurrent writes are then lost
    # (tests/e2e/test_scale.py saw ~2 % of 300 documents vanish from the record store with fork).
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(batch)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_pool_worker,
        initargs=(settings, orphans_before),
    )
    broken: list[int] = []
    try:
        futures = {}
        for n, i in enumerate(batch):
            mark = os.path.join(marks, str(i))
            try:
                futures[pool.submit(_work, str(files[i][0]), files[i][1], languages, mark, owners[i])] = i
            except BrokenProcessPool:  # broke while the queue was being filled: the rest never went in
                broken += batch[n:]
                break
        for future in as_completed(futures):
            i = futures[future]
            signals: list[telemetry.Emission] = []
            try:
                result, signals = future.result()
            except BrokenProcessPool:
                broken.append(i)
                continue
            except Exception as exc:  # the document's own error (e.g. its file cannot be read)
                result = failed_row(files[i][1], exc)
            done(i, result, signals)
    except BaseException:  # Ctrl-C: stop the workers now rather than finish the queue
        _stop_now(pool)
        raise
    pool.shutdown(wait=True)
    return broken


def worker_processes(pool: Executor) -> list[BaseProcess]:
    """A process pool's worker processes, to end busy ones: no public way before Python 3.14's
    terminate_workers(). Take them before shutdown(), which sets the pool's _processes to None."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Cancel what is queued and end the workers."""
    processes = worker_processes(pool)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
