"""`docflow model …`: the model registry — list versions, promote one, roll back, publish.

Mounted on the main CLI with ``app.add_typer(model_app, name="model")``. MLflow and the training
package are imported inside the commands: the Lambda runtime never loads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from docflow.settings import Settings

if TYPE_CHECKING:
    from docflow_training.publish import PublishTarget
    from docflow_training.registry import Registry

model_app = typer.Typer(
    name="model",
    help="The model registry (MLflow): versions, the champion, promotion, rollback, publishing.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

HomeOption = Annotated[Path | None, typer.Option(help="State directory (default: DOCFLOW_HOME or ~/.docflow).")]
BucketOption = Annotated[
    str | None,
    typer.Option(
        help="Publish to this model bucket (s3://…/models/). Default: DOCFLOW_MODEL_BUCKET on the aws "
        "backend, else DOCFLOW_HOME/models."
    ),
]


def _settings(home: Path | None) -> Settings:
    try:
        return Settings(home=home) if home else Settings()
    except ValidationError as exc:
        err.print(f"[red]Invalid configuration:[/red]\n{exc}")
        raise typer.Exit(2) from None


def _registry(settings: Settings) -> Registry:
    try:
        from docflow_training.registry import Registry
        from docflow_training.tracking import resolve_tracking
    except ImportError as exc:
        err.print(f"[red]The registry needs the training extra:[/red] pip install -e '.[training]' ({exc})")
        raise typer.Exit(2) from None
    return Registry(resolve_tracking(settings.home))


def _target(settings: Settings, bucket: str | None) -> PublishTarget:
    from docflow_training.publish import LocalPublishTarget, target_from_uri

    if bucket:
        return target_from_uri(bucket if bucket.startswith("s3://") else f"s3://{bucket}")
    if settings.backend == "aws" and settings.model_bucket:
        return target_from_uri(f"s3://{settings.model_bucket}/models")
    return LocalPublishTarget(settings.home / "models")


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(1)


@model_app.command("list")
def list_versions(
    home: HomeOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """The registered versions, newest first, with their aliases and the gate's decision."""
    registry = _registry(_settings(home))
    rows = registry.versions()
    if json_output:
        print(json.dumps([{**row.__dict__, "created_at": row.created_at.isoformat()} for row in rows], indent=2))
        return
    if not rows:
        err.print(f"No versions of {registry.name} yet: train one with `docflow train --data <corpus>`.")
        return
    table = Table(title=f"{registry.name} ({registry.tracking.uri})")
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
    registry = _registry(settings)
    try:
        previous = registry.promote(version, reason="manual")
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    err.print(f"{registry.name} v{version} is the champion" + (f" (was v{previous})." if previous else "."))
    if publish:
        _publish(registry, settings, bucket, version)


@model_app.command()
def rollback(
    home: HomeOption = None,
    bucket: BucketOption = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish it for Classify.")] = True,
) -> None:
    """Give the champion alias back to the version the current champion replaced, and publish it."""
    from docflow_training.registry import RegistryError

    settings = _settings(home)
    registry = _registry(settings)
    try:
        current, previous = registry.rollback()
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    err.print(f"{registry.name}: champion rolled back from v{current} to v{previous}.")
    if publish:
        _publish(registry, settings, bucket, previous)


@model_app.command("publish")
def publish_command(home: HomeOption = None, bucket: BucketOption = None) -> None:
    """Publish the current champion again (e.g. to a new model bucket)."""
    settings = _settings(home)
    registry = _registry(settings)
    champion = registry.champion()
    if champion is None:
        raise _fail(f"{registry.name} has no champion to publish")
    _publish(registry, settings, bucket, int(champion.version))


def _publish(registry: Registry, settings: Settings, bucket: str | None, version: int) -> None:
    from docflow_training.publish import publish_version

    target = _target(settings, bucket)
    pointer = publish_version(registry, version, target)
    err.print(f"published v{pointer.version} to {target.describe()} ({pointer.model_dir})")
    print(pointer.model_dump_json(indent=2))
