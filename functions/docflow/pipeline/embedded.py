"""The embedded default: documents from local paths through the pipeline on local stores, in parallel.

Each worker process builds its own StepContext (its own SQLite connection, ONNX session and Tesseract
subprocesses); documents, not pages, are the unit of parallelism.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pydantic import BaseModel

from docflow import telemetry
from docflow.context import StepContext, build_context, resolve_model_dir
from docflow.errors import ConfigurationError
from docflow.models import Status, utcnow
from docflow.pipeline.runner import Runner
from docflow.pipeline.state import DocumentRef, PipelineState
from docflow.settings import Settings

if TYPE_CHECKING:
    from docflow.domain.classifier import TextClassifier


class DocumentResult(BaseModel):
    """One row of `docflow process`: what happened to one input file."""

    source: str
    document_id: str | None
    status: Status
    predicted_class: str | None = None
    confidence: float | None = None
    scores: dict[str, float] | None = None
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
        if state.replay and state.document_id:
            # A redelivery reports the outcome already on record.
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
            reason=state.reason,
            code=state.code,
            duplicate_of=state.duplicate_of,
            pages=state.pages,
            text_source=state.text_source,
            model_version=prediction.model_version if prediction else None,
            seconds=seconds,
        )


def discover(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly, and every file under a named folder (recursively, sorted; dotfiles skipped)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not any(part.startswith(".") for part in child.relative_to(path).parts):
                    yield child
        else:
            yield path


def display_path(path: Path | str) -> str:
    """A path as text that any store and JSON can hold: a file name that is not UTF-8 (Linux allows any
    bytes) keeps its bytes visible as \\xNN escapes instead of failing every encode later."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def ingest_key(path: Path) -> str:
    """Where a local file is kept in the blob store: stable per absolute path, readable name."""
    digest = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:16]
    return f"incoming/{digest}/{display_path(path.name)}"


def process_file(path: Path, source: str, ctx: StepContext, languages: str | None = None) -> DocumentResult:
    started = time.perf_counter()
    key = ingest_key(path)
    put_file = getattr(ctx.blobs, "put_file", None)
    if put_file is not None:
        put_file(key, path)
    else:
        ctx.blobs.put(key, path.read_bytes())
    state = Runner(ctx).run(DocumentRef(key=key, source=source), languages=languages)
    return DocumentResult.from_state(state, round(time.perf_counter() - started, 3), ctx)


def check_ready(settings: Settings) -> TextClassifier:
    """What every document needs, checked once before the first: the model loads, and Tesseract has the
    OCR languages. Raises ConfigurationError with the cause: a run that cannot classify anything stops
    here with one message instead of failing each document with it."""
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
        import docflow.domain.extraction
        import docflow.domain.validation  # noqa: F401

        ctx.classifier()
    except Exception:  # the document that needs it fails with the cause, as a row; never the whole pool
        return


def _work(path: str, source: str, languages: str | None) -> tuple[DocumentResult, list[telemetry.Emission]]:
    """One document; its signals come back with its row (worker processes have no sink of their own)."""
    assert _worker_ctx is not None, "worker not initialised"
    with telemetry.recording() as signals:
        result = process_file(Path(path), source, _worker_ctx, languages)
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


def _process_paths(
    files: list[tuple[Path, str]],
    settings: Settings,
    workers: int,
    on_result: Callable[[DocumentResult], None] | None,
    languages: str | None,
    orphans_before: datetime | None,
) -> list[DocumentResult]:
    results: list[DocumentResult | None] = [None] * len(files)

    def done(i: int, result: DocumentResult, signals: list[telemetry.Emission]) -> None:
        telemetry.replay(signals)  # into this process's sink: exact counts whatever the pool did
        results[i] = result
        if on_result:
            on_result(result)

    # Create the stores (SQLite schema, WAL) once here, before workers open them concurrently.
    build_context(settings)
    signals: list[telemetry.Emission]
    if workers <= 1 or len(files) <= 1:
        _init_worker(settings, orphans_before)
        for i, (path, source) in enumerate(files):
            try:
                result, signals = _work(str(path), source, languages)
            except Exception as exc:  # this document only (e.g. its file cannot be read): a row, as in the pool
                result, signals = failed_row(source, exc), []
            done(i, result, signals)
    else:
        # spawn, not fork: a forked worker inherits this process's open SQLite connection, and when the child
        # closes it, POSIX drops every lock the child holds on the file: concurrent writes are then lost
        # (tests/e2e/test_scale.py saw ~2 % of 300 documents vanish from the record store with fork).
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_pool_worker,
            initargs=(settings, orphans_before),
        ) as pool:
            futures: dict[Future[tuple[DocumentResult, list[telemetry.Emission]]], int] = {
                pool.submit(_work, str(path), source, languages): i for i, (path, source) in enumerate(files)
            }
            for future in as_completed(futures):
                i = futures[future]
                signals = []
                try:
                    result, signals = future.result()
                except BrokenProcessPool as exc:  # a worker died (killed, out of memory): still one row
                    result = failed_row(files[i][1], exc, worker_stopped=True)
                except Exception as exc:  # the document's own error (e.g. its file cannot be read)
                    result = failed_row(files[i][1], exc)
                done(i, result, signals)
    return [r for r in results if r is not None]
