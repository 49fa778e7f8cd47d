"""`docflow model …`: the model registry — list versions, promote one, roll back, publish.

Mounted on the main CLI with ``app.add_typer(model_app, name="model")``. MLflow and the training
package are imported inside the commands: the Lambda runtime never loads them.

Also home of what every `docflow` command stops with (cli.py imports them): ``fail`` (one red line on
stderr and the exit code), ``settings_failure`` (one line per bad setting) and ``load_settings`` (the
settings, with a state directory that can be written).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from docflow.settings import Settings, describe_errors

if TYPE_CHECKING:
    from docflow_training.publish import PublishTarget
    from docflow_training.registry import Registry

model_app = typer.Typer(
    name="model",
    help="The model registry (MLflow): versions, the champion, promotion, rollback, publishing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
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


def fail(message: str, code: int = 2) -> typer.Exit:
    """How a command stops on an error it understands: the message in red on stderr, read as text (not as
    rich markup: "[type=...]" or a path with brackets stays as it is) and not wrapped to the terminal's
    width; returns the exit to raise (2: usage or configuration, 1: the operation failed)."""
    err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    return typer.Exit(code)


def settings_failure(exc: ValidationError, given_as: Mapping[str, str] | None = None) -> typer.Exit:
    """``fail`` for invalid settings: one line per bad variable (or option), its value and what is expected."""
    return fail("\n".join(f"Invalid configuration: {line}" for line in describe_errors(exc, given_as)))


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


HomeOption = Annotated[Path | None, typer.Option(help="State directory (default: DOCFLOW_HOME or ~/.docflow).")]
BucketOption = Annotated[
    str | None,
    typer.Option(
        help="Publish to this model bucket (s3://…/models/). Default: DOCFLOW_MODEL_BUCKET on the aws "
        "backend, else DOCFLOW_HOME/models."
    ),
]


def _settings(home: Path | None) -> Settings:
    return load_settings(home=home)


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
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from docflow_training.tracking import redact_secrets, redact_uri

    try:
        yield
    except (MlflowException, SQLAlchemyError, OSError) as exc:  # OSError, SQLAlchemy: a local store's file
        cause = _root_cause(exc)
        detail = str(cause) or type(cause).__name__
        raise fail(f"MLflow tracking store {redact_uri(uri)}: {redact_secrets(detail, uri)}", 1) from None


def registry_for(settings: Settings) -> Registry:
    try:
        from docflow_training.registry import Registry
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


def _target(settings: Settings, bucket: str | None) -> PublishTarget:
    from docflow_training.publish import LocalPublishTarget, target_from_uri

    if bucket:
        return target_from_uri(bucket if bucket.startswith("s3://") else f"s3://{bucket}")
    if settings.backend == "aws" and settings.model_bucket:
        return target_from_uri(f"s3://{settings.model_bucket}/models")
    return LocalPublishTarget(settings.home / "models")


@model_app.command("list")
def list_versions(
    home: HomeOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """The registered versions, newest first, with their aliases and the gate's decision."""
    from docflow_training.tracking import redact_uri

    registry = registry_for(_settings(home))
    with tracking_errors(registry.tracking.uri):
        rows = registry.versions()
    if json_output:
        print(json.dumps([{**row.__dict__, "created_at": row.created_at.isoformat()} for row in rows], indent=2))
        return
    if not rows:
        err.print(f"No versions of {registry.name} yet: train one with `docflow train --data <corpus>`.")
        return
    table = Table(title=escape(f"{registry.name} ({redact_uri(registry.tracking.uri)})"))
    for column in ("version", "aliases", "created", "holdout macro-F1", "gate", "run"):
        table.add_column(column, no_wrap=True)
    table.add_column("reasons", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(
            str(row.version),
            ", ".join(row.aliases),
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{row.holdout_macro_f1:.4f}" if row.holdout_macro_f1 is not None else "",
            row.gate_decision or "",
            (row.run_id or "")[:12],
            row.gate_reasons if row.gate_reasons and row.gate_reasons != "-" else "",
        )
    Console(width=200 if not Console().is_terminal else None).print(table)


@model_app.command()
def promote(
    version: Annotated[int, typer.Argument(min=1, help="Registry version to make the champion.")],
    home: HomeOption = None,
    bucket: BucketOption = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish it for Classify.")] = True,
) -> None:
    """Make VERSION the champion (an operator's decision: the gate is not consulted) and publish it."""
    from docflow_training.registry import RegistryError

    settings = _settings(home)
    registry = registry_for(settings)
    try:
        with tracking_errors(registry.tracking.uri):
            registry.version(version)
            champion = registry.champion()
    except RegistryError as exc:
        raise fail(str(exc), 1) from None
    if champion is not None and int(champion.version) == version:
        err.print(
            f"{registry.name} v{version} is already the champion: nothing changed "
            "(`docflow model publish` publishes it again)."
        )
        return
    if publish:  # first: a publish that fails leaves the champion as it was, not the alias moved alone
        _publish(registry, settings, bucket, version)
    with _after_publish(registry, version, publish):
        previous = registry.promote(version, reason="manual")
    err.print(f"{registry.name} v{version} is the champion" + (f" (was v{previous})." if previous else "."))
    if publish and _serves_here(settings, bucket):
        rescore_review_queue(settings)


@model_app.command()
def rollback(
    home: HomeOption = None,
    bucket: BucketOption = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish it for Classify.")] = True,
) -> None:
    """Give the champion alias back to the version the current champion replaced, and publish it."""
    from docflow_training.registry import RegistryError

    settings = _settings(home)
    registry = registry_for(settings)
    try:
        with tracking_errors(registry.tracking.uri):
            current, previous = registry.rollback_plan()
    except RegistryError as exc:
        raise fail(str(exc), 1) from None
    if publish:  # first: a publish that fails leaves the champion as it was
        _publish(registry, settings, bucket, previous)
    with _after_publish(registry, previous, publish):
        registry.rollback()
    err.print(f"{registry.name}: champion rolled back from v{current} to v{previous}.")
    if publish and _serves_here(settings, bucket):
        rescore_review_queue(settings)


def _serves_here(settings: Settings, bucket: str | None) -> bool:
    """Whether the champion just published is the one this backend's Classify serves: not a local run's
    publish to a bucket (its queue, under DOCFLOW_HOME, is served by the champion it had)."""
    return bucket is None or settings.backend == "aws"


def rescore_review_queue(settings: Settings) -> None:
    """After a new champion is published: the documents waiting for a person are scored again by it, from
    their stored text (docflow.pipeline.rescore), with a progress bar. Best effort: the champion is serving
    either way, so a failure here is a warning, and `POST /predict/document/{id}` or the next promotion
    tries again."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from docflow.context import build_context
    from docflow.pipeline.rescore import rescore_queue

    try:
        ctx = build_context(settings)
        waiting = ctx.records.count_review_queue()
        if waiting == 0:
            return
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task("re-scoring the review queue", total=waiting)
            report = rescore_queue(ctx, progress=lambda r: bar.update(task, completed=r.scanned))
    except Exception as exc:  # the new champion serves whatever happens here
        err.print(f"[yellow]The review queue was not re-scored: {escape(str(exc))}[/yellow]")
        return
    skipped = "".join(f", {n} skipped ({reason})" for reason, n in report.skipped.items())
    err.print(
        f"review queue re-scored by {report.model_version}: {report.scanned} looked at, {report.settled} now "
        f"CLASSIFIED and out of the queue, {report.still_queued} still waiting{skipped}"
    )


@contextmanager
def _after_publish(registry: Registry, version: int, published: bool) -> Iterator[None]:
    """Moving the champion alias once ``version``'s files are published: if that fails, say that the model
    is already serving and how to make the registry agree."""
    from docflow_training.registry import RegistryError

    try:
        with tracking_errors(registry.tracking.uri):
            try:
                yield
            except RegistryError as exc:  # e.g. another operator moved the champion meanwhile
                raise fail(str(exc), 1) from None
    except typer.Exit:
        if published:
            err.print(
                f"v{version} is published and serving, but the registry's champion alias did not move: run "
                f"`docflow model promote {version} --no-publish` to make them agree."
            )
        raise


@model_app.command("publish")
def publish_command(home: HomeOption = None, bucket: BucketOption = None) -> None:
    """Publish the current champion again (e.g. to a new model bucket)."""
    settings = _settings(home)
    registry = registry_for(settings)
    with tracking_errors(registry.tracking.uri):
        champion = registry.champion()
    if champion is None:
        raise fail(f"{registry.name} has no champion to publish", 1)
    _publish(registry, settings, bucket, int(champion.version))


def _publish(registry: Registry, settings: Settings, bucket: str | None, version: int) -> None:
    from docflow.errors import ConfigurationError, TransientError
    from docflow_training.publish import publish_version

    target = _target(settings, bucket)
    with tracking_errors(registry.tracking.uri):
        try:
            pointer = publish_version(registry, version, target)
        except (ConfigurationError, TransientError, OSError) as exc:  # the bucket or folder refused the files
            raise fail(f"Publishing v{version} to {target.describe()} failed: {exc}", 1) from None
    err.print(f"published v{pointer.version} to {target.describe()} ({pointer.model_dir})")
    print(pointer.model_dump_json(indent=2))
