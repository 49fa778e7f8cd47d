"""`docflow process`, `eval`, `serve` and `samples`: documents through the pipeline on the local stores, and the
REST API over them.

Lazy imports: the pipeline and its worker pool, the evaluation, the model resolution, the metrics and the
sample maker (Pillow) are imported where they are used, inside the commands (docflow.pipeline.embedded: ~35 ms,
docflow.evaluation, docflow.context, docflow.telemetry: ~4 ms, docflow.samples), so that `docflow --help` and
the other commands do not pay for them; the pipeline's own heavy dependencies (ONNX Runtime, Tesseract, PDFium)
load later still, in its steps. What is imported at the top costs ~2 ms at most (typer, rich, pydantic,
docflow.settings, docflow.errors, docflow.api.server, whose uvicorn and FastAPI load only when serving).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from docflow.api.server import serve as serve_api
from docflow.cli.common import HomeOption, err, fail, load_settings, progress_bar, settings_failure, unusable_dir
from docflow.errors import ConfigurationError

if TYPE_CHECKING:
    from docflow.pipeline.inputs import DocumentResult
    from docflow.telemetry import PrometheusSink

STATUS_STYLE = {
    "CLASSIFIED": "green",
    "NEEDS_REVIEW": "yellow",
    "REJECTED": "red",
    "DUPLICATE": "cyan",
    "FAILED": "bold red",
}


def process(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively; dotfiles skipped).")],
    workers: Annotated[int, typer.Option(min=1, help="Documents processed in parallel.")] = os.cpu_count() or 1,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per document on stdout.")] = False,
    languages: Annotated[
        str | None,
        typer.Option(help="Tesseract languages, e.g. eng or eng+rus (default: DOCFLOW_OCR_LANGUAGES)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Run every document through validate → extract text → classify, on the local stores."""
    from docflow.pipeline.embedded import RunInterrupted, process_paths
    from docflow.pipeline.inputs import check_ready, discover, display_path

    settings = load_settings(home=home, ocr_languages=languages)
    unusable = [why for p in paths if (why := _unusable_input(p))]
    if unusable:
        raise fail("; ".join(unusable))

    def skipped(folder: Path, why: str) -> None:
        err.print(f"[yellow]skipped {display_path(folder)}: {why}[/yellow]", soft_wrap=True)

    files = [(path, display_path(path)) for path in discover(paths, on_skipped=skipped)]
    if not files:
        err.print("[yellow]No files found.[/yellow]")
        raise typer.Exit(0)
    try:
        check_ready(settings)  # a missing model or OCR language: one message, not one per document
    except ConfigurationError as exc:
        raise fail(str(exc)) from None

    progress = progress_bar()

    def on_result(result: DocumentResult) -> None:
        progress.advance(task)
        if json_output:
            print(result.model_dump_json(), flush=True)

    sink = _prometheus()
    interrupted: RunInterrupted | None = None
    with progress:
        task = progress.add_task("Processing", total=len(files))
        try:
            results = process_paths(
                files,
                settings,
                workers=min(workers, len(files)),
                on_result=on_result,
                languages=settings.ocr_languages if languages else None,
            )
        except RunInterrupted as exc:
            interrupted, results = exc, exc.results

    if not json_output:
        _print_table(results)
    _write_metrics(sink, settings.home / "metrics" / "docflow.prom")
    if interrupted is not None:
        err.print(
            f"[yellow]Interrupted: {len(results)} of {interrupted.total} documents done. Run the same command "
            "again to finish the rest (those done are reported from the record, not processed again).[/yellow]"
        )
        raise typer.Exit(130)


def _unusable_input(path: Path) -> str | None:
    """Why a path named on the command line cannot be looked at (None when it can)."""
    from docflow.pipeline.inputs import display_path

    try:
        os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            return f"{display_path(path)} is a link to nothing"
        return f"No such file or folder: {display_path(path)}"
    except OSError as exc:
        return f"Cannot read {display_path(path)}: {exc.strerror or type(exc).__name__}"
    return None


def _prometheus() -> PrometheusSink:
    """This run's signals (its worker processes hand theirs back), for the textfile written at the end."""
    from docflow import telemetry

    sink = telemetry.PrometheusSink()
    telemetry.configure(sink)
    return sink


def _write_metrics(sink: PrometheusSink, path: Path) -> None:
    """The run's metrics in node_exporter's textfile-collector format; where they are goes to stderr."""
    try:
        err.print(f"metrics: {sink.write_textfile(path)}")
    except OSError as exc:  # the results are out already: a metrics file that cannot be written is a warning
        err.print(f"[yellow]metrics not written to {path}: {exc}[/yellow]")


def _print_table(results: list[DocumentResult]) -> None:
    # Piped into a file or CI log there is no terminal width to respect: keep rows on one line.
    out = Console() if Console().is_terminal else Console(width=200)
    table = Table(show_lines=False)
    for column in ("source", "status", "class", "confidence", "pages", "text", "seconds"):
        table.add_column(column, no_wrap=column != "source", overflow="fold")
    table.add_column("reason", overflow="fold", ratio=1)
    for r in results:
        # Text cells, not markup: a file name or a reason may hold "[...]" of its own.
        table.add_row(
            Text(r.source),
            Text(str(r.status), style=STATUS_STYLE.get(r.status, "")),
            r.predicted_class or "",
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            str(r.pages or ""),
            r.text_source or "",
            f"{r.seconds:.2f}",
            Text(r.reason or ""),
        )
    out.print(table)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    out.print(", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items())))
    if counts.get("NEEDS_REVIEW"):
        err.print(
            f"{counts['NEEDS_REVIEW']} need a person: run `docflow serve` (same DOCFLOW_HOME) and open "
            "http://127.0.0.1:8000/review"
        )


def eval_command(
    path: Annotated[Path, typer.Argument(help="Labelled folder (a sub-folder per class) or CSV (path,label).")],
    workers: Annotated[int, typer.Option(min=1, help="Documents processed in parallel.")] = os.cpu_count() or 1,
    json_output: Annotated[bool, typer.Option("--json", help="The report as one JSON object on stdout.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Also save the confusion matrix as a PNG here.")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Model directory (default: as `process` resolves it).")] = None,
    review_threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Override the threshold.")] = None,
    rows_out: Annotated[Path | None, typer.Option("--rows", help="Write each document's row as JSON lines.")] = None,
) -> None:
    """Run labelled documents through the same pipeline as `process` (on a temporary state directory)
    and report accuracy, macro-F1, per-class precision/recall, abstention and the confusion matrix."""
    import dataclasses

    from docflow.evaluation import (
        EvalInputError,
        evaluate,
        format_report,
        load_labelled,
        plot_confusion,
        rows_from_results,
        run_pipeline,
    )
    from docflow.pipeline.embedded import RunInterrupted

    # The documents run on a temporary state directory: DOCFLOW_HOME only receives the metrics file.
    settings = load_settings(check_home=False, model_dir=model_dir, review_threshold=review_threshold)
    try:
        items = load_labelled(path)
    except EvalInputError as exc:
        raise fail(str(exc)) from None
    # Where the results go is checked before the run, not found unwritable after it.
    if plot is not None and plot.suffix.lower() != ".png":
        raise fail(f"--plot {plot}: the confusion matrix is a PNG; give a file name ending in .png")
    for option, target in (("--plot", plot), ("--rows", rows_out)):
        if target is not None:
            reason = f"{target} is a folder" if target.is_dir() else unusable_dir(target.parent)
            if reason:
                raise fail(f"{option} {target} cannot be written: {reason}")

    if model_dir is None:
        # The model `process` would use (DOCFLOW_MODEL_DIR, the champion published in DOCFLOW_HOME, the
        # default), resolved here: the run itself is on a temporary state directory.
        from docflow.context import resolve_model_dir

        try:
            model_dir = resolve_model_dir(settings)
        except ConfigurationError as exc:
            raise fail(str(exc)) from None
        except Exception as exc:  # an unusable DOCFLOW_HOME or champion.json, the model bucket out of reach
            raise fail(f"Cannot find the model to evaluate: {exc or type(exc).__name__}") from None

    sink = _prometheus()
    progress = progress_bar()
    with progress:
        task = progress.add_task("Evaluating", total=len(items))
        try:
            results, labels, threshold, head = run_pipeline(
                items,
                workers,
                model_dir=model_dir,
                review_threshold=review_threshold,
                on_result=lambda _result: progress.advance(task),
            )
        except ConfigurationError as exc:  # the model does not load, an OCR language is missing
            raise fail(str(exc)) from None
        except RunInterrupted as exc:
            err.print(f"[yellow]Interrupted after {len(exc.results)} of {exc.total} documents: no report.[/yellow]")
            raise typer.Exit(130) from None
    err.print(f"model: {model_dir}", markup=False, soft_wrap=True)
    # Its own folder: a textfile collector on metrics/ must not read the same series from two files.
    _write_metrics(sink, settings.home / "metrics" / "eval" / "docflow.prom")
    rows = rows_from_results(items, results)
    report = dataclasses.replace(evaluate(rows, model_labels=labels, review_threshold=threshold), scan_head=head)
    if head and head["in_sample"]:
        err.print(
            f"[yellow]{head['in_sample']} of these documents were used to fit the model's scan head: the figures "
            "on them are in-sample (bench/quality.py reports them cross-validated).[/yellow]"
        )
    if rows_out:
        rows_out.parent.mkdir(parents=True, exist_ok=True)
        rows_out.write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in rows), encoding="utf-8")
    if plot:
        err.print(f"confusion matrix saved to {plot_confusion(report, plot)}")
    if json_output:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))


def serve(
    host: Annotated[str, typer.Option(help="Interface (without DOCFLOW_API_KEY: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=0, help="Pipeline worker processes (0: one thread).")] = os.cpu_count()
    or 1,
    home: HomeOption = None,
) -> None:
    """Serve the REST API (Swagger UI at /docs) on the local stores, with background workers."""
    settings = load_settings(home=home)
    try:
        serve_api(host, port, workers, settings)
    except ConfigurationError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:  # the API's own settings (DOCFLOW_API_*)
        raise settings_failure(exc) from None


def samples(directory: Annotated[Path, typer.Argument(help="Folder to write the sample documents into.")]) -> None:
    """Write sample documents (made here, no outside data) that exercise every outcome."""
    from docflow.samples import make_samples

    reason = unusable_dir(directory)
    if reason:
        raise fail(f"Cannot write the samples into {directory}: {reason}")
    try:
        written = make_samples(directory)
    except OSError as exc:
        raise fail(f"Cannot write the samples into {directory}: {exc.strerror or exc}") from None
    for path in written:
        err.print(f"wrote {path}", markup=False)
