"""The embedded default's inputs and rows: local paths found and checked, one file through the pipeline, and
the row `docflow process` prints for it (DocumentResult), whatever happened to it."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from docflow import telemetry
from docflow.context import StepContext, build_context, resolve_model_dir
from docflow.errors import ConfigurationError
from docflow.model_source import sha256_file
from docflow.pipeline.runner import Runner
from docflow.pipeline.state import DocumentRef, PipelineState, StepError
from docflow.pipeline.steps import record_failure_step
from docflow.settings import Settings
from docflow.values import RejectionCode, Status

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


def worker_died_row(file: tuple[Path, str], owner: str, deaths: int, settings: Settings) -> DocumentResult:
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
