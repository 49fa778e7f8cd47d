"""`docflow model …`: the model registry — list versions, promote one, roll back, publish; and
``rescore_review_queue``, which every path that publishes a new champion here (promote, rollback, a promoting
`docflow train`) runs afterwards.

Mounted on the main CLI with ``app.add_typer(model_app, name="model")`` (docflow.cli).

Lazy imports: the training package (MLflow, scikit-learn), the stores and the re-scoring are imported where
they are used, inside the commands (docflow_training, docflow.context, docflow.pipeline.rescore): `docflow
--help` and the commands that never touch the registry must not pay for them, and the Lambda runtime never
loads MLflow. docflow_training is also looked up at call time so that tests can replace its Registry.
Everything imported at the top is light (typer, rich, docflow.settings, docflow.errors, docflow.cli.common).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from docflow.cli.common import HomeOption, err, fail, load_settings, progress_bar, registry_for, tracking_errors
from docflow.errors import ConfigurationError, TransientError
from docflow.settings import Settings

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

BucketOption = Annotated[
    str | None,
    typer.Option(
        help="Publish to this model bucket (s3://…/models/). Default: DOCFLOW_MODEL_BUCKET on the aws "
        "backend, else DOCFLOW_HOME/models."
    ),
]


def _settings(home: Path | None) -> Settings:
    return load_settings(home=home)


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
    from docflow.context import build_context
    from docflow.pipeline.rescore import rescore_queue

    try:
        ctx = build_context(settings)
        waiting = ctx.records.count_review_queue()
        if waiting == 0:
            return
        with progress_bar() as bar:
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
    from docflow_training.publish import publish_version

    target = _target(settings, bucket)
    with tracking_errors(registry.tracking.uri):
        try:
            pointer = publish_version(registry, version, target)
        except (ConfigurationError, TransientError, OSError) as exc:  # the bucket or folder refused the files
            raise fail(f"Publishing v{version} to {target.describe()} failed: {exc}", 1) from None
    err.print(f"published v{pointer.version} to {target.describe()} ({pointer.model_dir})")
    print(pointer.model_dump_json(indent=2))
