"""The embedded default: documents from local paths through the pipeline on local stores, in parallel.

Each worker process builds its own StepContext (its own SQLite connection, ONNX session and Tesseract
subprocesses); documents, not pages, are the unit of parallelism.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from docflow import telemetry
from docflow.context import build_context
from docflow.pipeline.inputs import DocumentResult, failed_row, process_file, worker_died_row
from docflow.pipeline.run_lock import holding_run_lock
from docflow.pipeline.supervisor import JobHandler, Supervisor, init_worker, worker_context
from docflow.settings import Settings

logger = logging.getLogger(__name__)

# A document whose worker dies this many times while it runs alone fails with that reason
# (pipeline/supervisor.py: the documents beside it or queued behind it are not charged).
MAX_ATTEMPTS = 2

WorkResult = tuple[DocumentResult, list[telemetry.Emission]]


class FileJob(NamedTuple):
    """One file of the run: its position in the input, its path, what its row calls it; ``owner``: the same for
    every attempt at this document in this run (Runner.run)."""

    position: int
    path: str
    source: str
    languages: str | None
    owner: str | None = None


def _work(job: FileJob) -> WorkResult:
    """One document; its signals come back with its row (worker processes have no sink of their own)."""
    with telemetry.recording() as signals:
        result = process_file(Path(job.path), job.source, worker_context(), job.languages, job.owner)
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
            init_worker(settings, orphans_before)
            for i in todo:
                path, source = files[i]
                try:
                    result, signals = _work(FileJob(i, str(path), source, languages))
                except Exception as exc:  # this document only (its file cannot be read): a row, as in the pool
                    result, signals = failed_row(source, exc), []
                done(i, result, signals)
        else:
            _run_in_pool(todo, files, settings, workers, languages, orphans_before, done)
    except KeyboardInterrupt:
        raise RunInterrupted([r for r in results if r is not None], len(files)) from None
    return [r for r in results if r is not None]


class _Rows(JobHandler[FileJob, WorkResult]):
    """Each document's end as its row."""

    def __init__(self, settings: Settings, done: Callable[[int, DocumentResult, list[telemetry.Emission]], None]):
        self.settings = settings
        self.done = done

    def finished(self, job: FileJob, result: WorkResult) -> None:
        self.done(job.position, *result)

    def failed(self, job: FileJob, exc: BaseException) -> None:  # its own error (its file cannot be read)
        self.done(job.position, failed_row(job.source, exc), [])

    def gave_up(self, job: FileJob, deaths: int, ran: bool) -> None:
        if ran:
            row = worker_died_row((Path(job.path), job.source), job.owner or "", deaths, self.settings)
        else:  # it never ran: nothing of it is on record
            stopped = BrokenProcessPool(f"no worker process could start ({deaths} tries)")
            row = failed_row(job.source, stopped, worker_stopped=True)
        self.done(job.position, row, [])


def _run_in_pool(
    todo: list[int],
    files: list[tuple[Path, str]],
    settings: Settings,
    workers: int,
    languages: str | None,
    orphans_before: datetime | None,
    done: Callable[[int, DocumentResult, list[telemetry.Emission]], None],
) -> None:
    """``todo`` on worker processes; Ctrl-C stops the workers now rather than finish the queue."""
    with tempfile.TemporaryDirectory(prefix="docflow-run-") as marks:
        supervisor: Supervisor[FileJob, WorkResult] = Supervisor(
            settings=settings,
            workers=min(workers, len(todo)),
            work=_work,
            key=lambda job: str(job.position),
            handler=_Rows(settings, done),
            marks=Path(marks),
            max_attempts=MAX_ATTEMPTS,
            orphans_before=orphans_before,
        )
        try:
            for i in todo:
                # A document run again after its worker died is the same delivery: its record is its own work.
                supervisor.submit(FileJob(i, str(files[i][0]), files[i][1], languages, uuid.uuid4().hex))
            while not supervisor.wait_idle(timeout=0.5):
                pass
        except BaseException:
            supervisor.shutdown(grace=0)
            raise
        supervisor.shutdown(grace=0)
