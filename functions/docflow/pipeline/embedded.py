"""The embedded default: documents from local paths through the pipeline on local stores, in parallel.

Each worker process builds its own StepContext (its own SQLite connection, ONNX session and Tesseract
subprocesses); documents, not pages, are the unit of parallelism.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import multiprocessing
import os
import signal
import stat
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pydantic import BaseModel

from docflow import telemetry
from docflow.context import StepContext, build_context, resolve_model_dir
from docflow.errors import ConfigurationError
from docflow.model_source import sha256_file
from docflow.models import RejectionCode, Status, utcnow
from docflow.pipeline.runner import Runner
from docflow.pipeline.state import DocumentRef, PipelineState, StepError
from docflow.pipeline.steps import record_failure_step
from docflow.settings import Settings

if TYPE_CHECKING:
    from docflow.domain.classifier import TextClassifier

logger = logging.getLogger(__name__)


class DocumentResult(BaseModel):
    """One row of `docflow process`: what happened to one input file."""

    source: str
    document_id: str | None
    status: Status
    predicted_class: str | None = None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    out_of_scope: float | None = None  # the scan head's probability that the page is none of the classes
    reason: str | None = None
    code: str | None = None
    duplicate_of: str | None = None
    pages: int | None = None
    text_source: str | None = None
    model_version: str | None = None
    seconds: float

    @classmethod
    def from_state(cls, state: PipelineState, seconds: float, ctx: StepContext) -> DocumentResult:
        prediction = state.prediction
        if state.replay and state.document_id and state.status != Status.DUPLICATE:
            # A redelivery reports the outcome already on record. (Not a duplicate's: the record is the
            # document's it duplicates, and this upload's own outcome stays DUPLICATE.)
            record = ctx.records.get_document(state.document_id)
            if record is not None:
                return cls(
                    source=state.ref.source,
                    document_id=record.document_id,
                    status=record.status,
                    predicted_class=record.predicted_class,
                    confidence=record.confidence,
                    scores=record.scores,
                    reason=record.reason,
                    code=record.code,
                    pages=record.pages,
                    text_source=record.text_source,
                    model_version=record.model_version,
                    seconds=seconds,
                )
        return cls(
            source=state.ref.source,
            document_id=state.document_id,
            status=state.status,
            predicted_class=prediction.predicted_class if prediction else None,
            confidence=prediction.confidence if prediction else None,
            scores=prediction.scores if prediction else None,
            out_of_scope=prediction.out_of_scope if prediction else None,
            reason=state.reason,
            code=state.code,
            duplicate_of=state.duplicate_of,
            pages=state.pages,
            text_source=state.text_source,
            model_version=prediction.model_version if prediction else None,
            seconds=seconds,
        )


def discover(paths: Iterable[Path], on_skipped: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """Files named directly, and every entry under a named folder: recursively, sorted, through linked
    folders (each real folder once, so a link loop ends), dotfiles and dot-folders skipped. Entries that are
    not readable documents (a dangling link, a device, a pipe) are yielded too: each gets a row saying why,
    rather than vanishing from the run. A sub-folder that cannot be listed is reported to ``on_skipped``."""
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        found: list[Path] = []
        walked: set[str] = set()

        def unreadable(exc: OSError) -> None:
            if on_skipped is not None:
                on_skipped(Path(exc.filename), exc.strerror or str(exc))

        for root, dirs, names in os.walk(path, onerror=unreadable, followlinks=True):
            real = os.path.realpath(root)
            if real in walked:  # reached again through a link
                dirs[:] = []
                continue
            walked.add(real)
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [Path(root, name) for name in names if not name.startswith(".")]
        yield from sorted(found)


def display_path(path: Path | str) -> str:
    """A path as text that any store and JSON can hold: a file name that is not UTF-8 (Linux allows any
    bytes) keeps its bytes visible as \\xNN escapes instead of failing every encode later."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def ingest_key(path: Path) -> str:
    """Where a local file is kept in the blob store: stable per absolute path, readable name."""
    digest = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:16]
    return f"incoming/{digest}/{display_path(path.name)}"


class InputFileError(Exception):
    """A named input that is not a file Docflow can take in (a device, a socket): its row says why."""


_FILE_KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def process_file(
    path: Path, source: str, ctx: StepContext, languages: str | None = None, owner: str | None = None
) -> DocumentResult:
    started = time.perf_counter()
    info = path.stat()  # through a link; a missing or unreadable file raises, and becomes its row
    if not stat.S_ISREG(info.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise InputFileError(f"{display_path(path)} is {kind}, not a document file")
    limit = ctx.settings.limits.max_bytes
    if info.st_size > limit:
        # Rejected here, before a byte is copied into the state directory: an oversized file is never
        # stored (as the API refuses one with 413), and its content is read once, only to name it.
        return too_large_row(path, source, info.st_size, limit, started)
    key = ingest_key(path)
    put_file = getattr(ctx.blobs, "put_file", None)
    if put_file is not None:
        put_file(key, path)
    else:
        ctx.blobs.put(key, path.read_bytes())
    state = Runner(ctx).run(DocumentRef(key=key, source=source), languages=languages, owner=owner)
    result = DocumentResult.from_state(state, round(time.perf_counter() - started, 3), ctx)
    if state.replay and not result.status.terminal:
        why = "another run is processing this document (or a run that died left it unfinished)"
        result = result.model_copy(update={"reason": why})
    return result


def too_large_row(path: Path, source: str, size: int, limit: int, started: float) -> DocumentResult:
    """The row of a file over DOCFLOW_MAX_BYTES: REJECTED/TOO_LARGE, as Validate words it, with the
    document id (SHA-256) streamed from the file itself. Not kept in the stores."""
    telemetry.document_processed(Status.REJECTED, None)
    return DocumentResult(
        source=source,
        document_id=sha256_file(path),
        status=Status.REJECTED,
        code=RejectionCode.TOO_LARGE,
        reason=f"the file is {size:,} bytes; the limit is {limit:,} bytes (not stored)",
        seconds=round(time.perf_counter() - started, 3),
    )


def check_ready(settings: Settings) -> TextClassifier:
    """What every document needs, checked once before the first: the model loads, and Tesseract has the
    OCR languages. Raises ConfigurationError with the cause: a run that cannot classify anything stops
    here with one message instead of failing each document with it."""
    # Imported here: onnxruntime, Pillow, pdfium and Tesseract load when a run starts, not with this module
    # (the CLI, `docflow serve` and each spawned worker import it).
    from docflow.domain.classifier import ModelIncompatibleError, ModelNotFoundError, load_classifier
    from docflow.domain.extraction import default_engine
    from docflow.domain.ocr import OcrLanguageError, TesseractNotFoundError

    try:
        model_dir = resolve_model_dir(settings)
        classifier = load_classifier(model_dir)
    except (ModelNotFoundError, ModelIncompatibleError, ConfigurationError) as exc:
        raise ConfigurationError(str(exc)) from exc
    except Exception as exc:  # a damaged model.onnx: onnxruntime's own error types
        raise ConfigurationError(f"cannot load the model: {type(exc).__name__}: {exc}") from exc
    check_languages = getattr(default_engine(), "check_languages", None)
    if check_languages is not None:
        try:
            check_languages(settings.ocr_languages)
        except TesseractNotFoundError:
            pass  # documents with a text layer need no OCR; one that does fails as its own row, saying so
        except OcrLanguageError as exc:
            raise ConfigurationError(str(exc)) from exc
    return classifier


def failed_row(source: str, exc: BaseException, worker_stopped: bool = False) -> DocumentResult:
    """The row of a document whose processing raised outside the pipeline's own Catch (its file could not
    be read, its worker process died); counted as FAILED like any other."""
    telemetry.document_processed(Status.FAILED, None)
    cause = str(exc) or type(exc).__name__
    return DocumentResult(
        source=source,
        document_id=None,
        status=Status.FAILED,
        code=type(exc).__name__,
        reason=f"the worker processing this document stopped: {cause}" if worker_stopped else cause,
        seconds=0.0,
    )


_worker_ctx: StepContext | None = None
_run_lock: IO[str] | None = None


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


def hold_run_lock(settings: Settings) -> None:
    """A worker process (one per process: spawned for one run, or for `docflow serve`) holds the run lock
    (shared) too, for its whole life: a worker can outlive its parent (killed while the worker finishes a
    document), and that document must not look orphaned to the next run."""
    global _run_lock
    if _run_lock is None and settings.backend == "local":
        _run_lock = _open_run_lock(settings)
        fcntl.flock(_run_lock, fcntl.LOCK_SH)


def _open_run_lock(settings: Settings) -> IO[str]:
    settings.home.mkdir(parents=True, exist_ok=True)
    return (settings.home / "run.lock").open("a")


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


@contextlib.contextmanager
def home_run(settings: Settings) -> Iterator[datetime | None]:
    """Hold the state directory's run lock while the pipeline runs on it (shared: runs may overlap; `docflow
    serve` and every worker process hold it too). A run that finds nobody else holding it knows that every
    unfinished document record written before it began is an orphan of a run that died (a killed `docflow
    process`): it yields that moment (StepContext.orphans_before), else None. Local stores only: on AWS,
    executions in flight hold no lock here."""
    if settings.backend != "local":
        yield None
        return
    with _open_run_lock(settings) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        began = utcnow()
        fcntl.flock(lock, fcntl.LOCK_SH)  # from here on, others see this run (and do not take its work)
        yield began if alone else None


def process_paths(
    files: list[tuple[Path, str]],
    settings: Settings,
    workers: int,
    on_result: Callable[[DocumentResult], None] | None = None,
    languages: str | None = None,
) -> list[DocumentResult]:
    """Run every (path, source) through the pipeline; results come back in input order."""
    with home_run(settings) as orphans_before:
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
    had started run again alone (``suspects``: a single-worker pool, so a death is the document's own and
    charged to it, MAX_ATTEMPTS), then the rest on a fresh pool."""
    deaths: Counter[int] = Counter()
    # A document run again after its worker died is the same delivery: its record is its own work.
    owners = {i: uuid.uuid4().hex for i in todo}
    queued, suspects = list(todo), list[int]()
    with tempfile.TemporaryDirectory(prefix="docflow-run-") as marks:
        while queued or suspects:
            alone = bool(suspects)
            batch = suspects if alone else queued
            size = 1 if alone else workers
            broken = _run_batch(batch, size, files, settings, languages, orphans_before, marks, owners, done)
            started = {i for i in broken if os.path.exists(os.path.join(marks, str(i)))}
            for i in broken:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(marks, str(i)))
            if started and not alone:  # any of those running may have done it: each runs again alone, free
                suspects, queued = sorted(started), sorted(set(broken) - started)
            else:  # alone, the death is the running document's own; none started: the workers cannot start
                payers = started or set(broken)
                charged = _charge(sorted(payers), deaths, files, owners, settings, done, ran=bool(started))
                left = sorted((set(broken) - payers) | set(charged))
                if alone:
                    suspects = left
                else:
                    queued = left
            if broken:
                logger.warning(
                    "a worker process died; %d document(s) to run again (%d of them alone)",
                    len(suspects) + len(queued),
                    len(suspects),
                )


def _charge(
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
            done(i, _worker_died_row(files[i], owners[i], deaths[i], settings), [])
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


def _worker_died_row(file: tuple[Path, str], owner: str, deaths: int, settings: Settings) -> DocumentResult:
    """A document that killed its worker every time it ran alone: FAILED on record (not left PROCESSING
    for the lease), as the pipeline's Catch would record it."""
    path, source = file
    cause = f"its worker process died each of the {deaths} times it ran alone (out of memory, a native crash)"
    state = PipelineState(
        ref=DocumentRef(key=ingest_key(path), source=source),
        owner=owner,
        error=StepError(Error="WorkerDied", Cause=cause),
    )
    ctx = build_context(settings)
    return DocumentResult.from_state(record_failure_step(state, ctx), 0.0, ctx)


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
