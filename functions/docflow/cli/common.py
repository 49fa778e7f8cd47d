"""What every `docflow` command shares: how a command stops on an error (``fail``, ``settings_failure``), its
settings (``load_settings``), folders it writes into (``unusable_dir``), stderr (``err``) and its progress bar,
the MLflow tracking store the training commands talk to (``registry_for``, ``tracking_errors``), and labelled
scans read for them (``read_labelled_scans``: `docflow train --scans/--validation`, `docflow model combine`).

Lazy imports: MLflow, SQLAlchemy, docflow_training and docflow.evaluation are imported where they are used
(inside ``tracking_errors``, ``registry_for`` and ``read_labelled_scans``), not at the top: every command
imports this module, and `docflow --help`, `process` or `serve` must not pay seconds for MLflow (nor the
Lambda runtime load it). Everything imported at the top is light (typer, rich, pydantic, docflow.settings).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from docflow.settings import ENV_PREFIX, Settings, describe_errors

if TYPE_CHECKING:
    from docflow_training.registry import Registry

err = Console(stderr=True)

# The command-line options that set a Settings field (otherwise the field is named by its DOCFLOW_ variable).
OPTION_FOR_FIELD = {
    "home": "--home",
    "ocr_languages": "--languages",
    "model_dir": "--model-dir",
    "review_threshold": "--review-threshold",
    "drift_window_hours": "--window-hours",
    "drift_threshold": "--threshold",
    "drift_min_predictions": "--min-predictions",
}

HomeOption = Annotated[Path | None, typer.Option(help="State directory (default: DOCFLOW_HOME or ~/.docflow).")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """How a command stops on an error it understands: the message in red on stderr, read as text (not as
    rich markup: "[type=...]" or a path with brackets stays as it is) and not wrapped to the terminal's
    width; returns the exit to raise (2: usage or configuration, 1: the operation failed)."""
    err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    return typer.Exit(code)


def settings_failure(
    exc: ValidationError, given_as: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX
) -> typer.Exit:
    """``fail`` for invalid settings: one line per bad variable (or option), its value and what is expected."""
    return fail("\n".join(f"Invalid configuration: {line}" for line in describe_errors(exc, given_as, prefix)))


def unusable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be a folder this command writes into (it is created when missing), or None."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, not a folder"
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {exc.filename or path}: {exc.strerror or exc}"
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"cannot write into {path}: {exc.strerror or exc}"
    return None


def load_settings(*, check_home: bool = True, **overrides: object) -> Settings:
    """The settings (``overrides``: the options given; None = not given), or exit 2 with one line per bad
    value; with ``check_home``, also exit 2 when the state directory cannot be created or written."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise settings_failure(exc, {k: OPTION_FOR_FIELD.get(k, k) for k in given}) from None
    if check_home:
        reason = unusable_dir(settings.home)
        if reason:
            where = "--home" if "home" in given else "DOCFLOW_HOME"
            raise fail(f"The state directory {settings.home} ({where}) cannot be used: {reason}")
    return settings


def progress_bar() -> Progress:
    """The bar shown while documents run (process, eval, reading scans, re-scoring the review queue), on
    stderr; only on a terminal (a pipe or a CI log gets no redraws)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (MLflow wraps requests, which wraps urllib3, which wraps the OS
    error): "[Errno 111] Connection refused" instead of three pages of wrappers."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


@contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """An MLflow error (an unreachable or refusing tracking server, a broken store) as one line with its
    root cause, the server's password redacted; exit 1."""
    from mlflow.exceptions import MlflowException  # lazy: MLflow (see the module's docstring)
    from sqlalchemy.exc import SQLAlchemyError

    from docflow_training.tracking import redact_secrets, redact_uri

    try:
        yield
    except (MlflowException, SQLAlchemyError, OSError) as exc:  # OSError, SQLAlchemy: a local store's file
        cause = _root_cause(exc)
        detail = str(cause) or type(cause).__name__
        raise fail(f"MLflow tracking store {redact_uri(uri)}: {redact_secrets(detail, uri)}", 1) from None


def registry_for(settings: Settings) -> Registry:
    """The model registry on the tracking store DOCFLOW_HOME resolves to, once the store has answered; exit
    2 without the training extra, 1 when the store does not answer."""
    try:
        from docflow_training.registry import Registry  # lazy: MLflow (see the module's docstring)
        from docflow_training.tracking import resolve_tracking
    except ImportError as exc:
        raise fail(f"The registry needs the training extra: pip install -e '.[training]' ({exc})") from None
    tracking = resolve_tracking(settings.home)
    with tracking_errors(tracking.uri), _quick_retries():
        return Registry(tracking)


@contextmanager
def _quick_retries() -> Iterator[None]:
    """Connecting is the check that the tracking server answers: MLflow's default of 7 retries waits ~4
    minutes for one that is down, 3 give up in ~15 s. Only for the check: once it answered, MLflow's own
    patience applies, also to a training job started afterwards. An exported MLFLOW_HTTP_REQUEST_MAX_RETRIES
    wins."""
    name = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    if name in os.environ:
        yield
        return
    os.environ[name] = "3"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def read_labelled_scans(
    folder: Path,
    settings: Settings,
    workers: int | None,
    *,
    option: str = "--scans",
    labels: Sequence[str] | None = None,
) -> list[Any]:
    """The labelled scans under ``folder`` (``labels``: of these classes only), read by the pipeline's
    ExtractText, with a progress bar; cached in DOCFLOW_HOME/cache/scans so that fitting again does not read
    them again."""
    from docflow.evaluation import EvalInputError
    from docflow_training.scans import ScanReadError, read_scans

    if not folder.exists():
        raise fail(f"No such scans folder: {folder}")
    with progress_bar() as bar:
        task = bar.add_task("reading scans", total=None)
        try:
            read = read_scans(
                folder,
                settings.ocr,
                workers=workers,
                cache_dir=settings.home / "cache" / "scans",
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                labels=labels,
            )
        except (EvalInputError, ScanReadError) as exc:
            raise fail(f"{option}: {exc}") from None
    return read
