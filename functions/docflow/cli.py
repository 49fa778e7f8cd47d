"""`docflow`: the command line of the embedded default (no AWS, no Docker)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from docflow.settings import Settings

app = typer.Typer(
    name="docflow",
    help="Classify documents (scans, photos, PDFs) by type: validate, extract text, classify.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

STATUS_STYLE = {
    "CLASSIFIED": "green",
    "NEEDS_REVIEW": "yellow",
    "REJECTED": "red",
    "DUPLICATE": "cyan",
    "FAILED": "bold red",
}


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        err.print(f"[red]Invalid configuration:[/red]\n{exc}")
        raise typer.Exit(2) from None


@app.command()
def process(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
    workers: Annotated[int, typer.Option(min=1, help="Documents processed in parallel.")] = os.cpu_count() or 1,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per document on stdout.")] = False,
    languages: Annotated[
        str | None,
        typer.Option(help="Tesseract languages, e.g. eng or eng+rus (default: DOCFLOW_OCR_LANGUAGES)."),
    ] = None,
    home: Annotated[Path | None, typer.Option(help="State directory (default: DOCFLOW_HOME or ~/.docflow).")] = None,
) -> None:
    """Run every document through validate → extract text → classify, on the local stores."""
    from docflow.pipeline.embedded import discover, process_paths

    settings = _settings(home=home, ocr_languages=languages)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        err.print(f"[red]No such file or folder:[/red] {', '.join(missing)}")
        raise typer.Exit(2)
    files = [(path, str(path)) for path in discover(paths)]
    if not files:
        err.print("[yellow]No files found.[/yellow]")
        raise typer.Exit(0)

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )

    def on_result(result: object) -> None:
        progress.advance(task)
        if json_output:
            print(result.model_dump_json(), flush=True)  # type: ignore[attr-defined]

    with progress:
        task = progress.add_task("Processing", total=len(files))
        results = process_paths(
            files,
            settings,
            workers=min(workers, len(files)),
            on_result=on_result,
            languages=settings.ocr_languages if languages else None,
        )

    if not json_output:
        _print_table(results)


def _print_table(results: list) -> None:  # type: ignore[type-arg]
    # Piped into a file or CI log there is no terminal width to respect: keep rows on one line.
    out = Console() if Console().is_terminal else Console(width=200)
    table = Table(show_lines=False)
    for column in ("source", "status", "class", "confidence", "pages", "text", "seconds"):
        table.add_column(column, no_wrap=column != "source", overflow="fold")
    table.add_column("reason", overflow="fold", ratio=1)
    for r in results:
        table.add_row(
            r.source,
            f"[{STATUS_STYLE.get(r.status, '')}]{r.status}[/]",
            r.predicted_class or "",
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            str(r.pages or ""),
            r.text_source or "",
            f"{r.seconds:.2f}",
            r.reason or "",
        )
    out.print(table)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    out.print(", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items())))


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Labelled corpus: one folder per class of .txt files.")],
    out: Annotated[
        Path | None, typer.Option(help="Model directory to write (default: the set-up default model).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (training is deterministic for a seed).")] = 0,
) -> None:
    """Train a classifier on a labelled text corpus and write a model directory (ONNX + tokenizer)."""
    try:
        from docflow_training.train import TrainConfig, train_model
    except ImportError as exc:
        err.print(f"[red]Training needs the training extra:[/red] pip install -e '.[training]' ({exc})")
        raise typer.Exit(2) from None
    from docflow.settings import DEFAULT_MODEL_DIR

    if not data.is_dir():
        err.print(f"[red]No such corpus folder:[/red] {data}")
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    target = out or DEFAULT_MODEL_DIR
    metrics = train_model(data, target, TrainConfig(seed=seed))
    summary = {k: metrics[k] for k in ("accuracy", "macro_f1", "n_train", "n_holdout") if k in metrics}
    err.print(f"Model written to {target}")
    print(json.dumps(summary, indent=2))


@app.command()
def samples(directory: Annotated[Path, typer.Argument(help="Folder to write the sample documents into.")]) -> None:
    """Write sample documents (made here, no outside data) that exercise every outcome."""
    from docflow.samples import make_samples

    for path in make_samples(directory):
        err.print(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
