"""`docflow`: the command line of the embedded default (no AWS, no Docker)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from docflow.cli_model import fail, load_settings, model_app, settings_failure, unusable_dir

if TYPE_CHECKING:
    from docflow.domain.drift import DriftReport
    from docflow.pipeline.embedded import DocumentResult
    from docflow.telemetry import PrometheusSink

app = typer.Typer(
    name="docflow",
    help="Classify documents (scans, photos, PDFs) by type: validate, extract text, classify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # an unexpected error's traceback must not print settings or secrets
)
app.add_typer(model_app, name="model")
err = Console(stderr=True)

STATUS_STYLE = {
    "CLASSIFIED": "green",
    "NEEDS_REVIEW": "yellow",
    "REJECTED": "red",
    "DUPLICATE": "cyan",
    "FAILED": "bold red",
}


@app.command()
def process(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively; dotfiles skipped).")],
    workers: Annotated[int, typer.Option(min=1, help="Documents processed in parallel.")] = os.cpu_count() or 1,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per document on stdout.")] = False,
    languages: Annotated[
        str | None,
        typer.Option(help="Tesseract languages, e.g. eng or eng+rus (default: DOCFLOW_OCR_LANGUAGES)."),
    ] = None,
    home: Annotated[Path | None, typer.Option(help="State directory (default: DOCFLOW_HOME or ~/.docflow).")] = None,
) -> None:
    """Run every document through validate → extract text → classify, on the local stores."""
    from docflow.errors import ConfigurationError
    from docflow.pipeline.embedded import RunInterrupted, check_ready, discover, display_path, process_paths

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

    progress = _progress()

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
    from docflow.pipeline.embedded import display_path

    try:
        os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            return f"{display_path(path)} is a link to nothing"
        return f"No such file or folder: {display_path(path)}"
    except OSError as exc:
        return f"Cannot read {display_path(path)}: {exc.strerror or type(exc).__name__}"
    return None


def _progress() -> Progress:
    """The bar `process` and `eval` show while documents run, on stderr; only on a terminal (a pipe or a
    CI log gets no redraws)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )


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


def _hyperparameters(pairs: list[str] | None, seed: int, family: str = "linear") -> dict[str, object]:
    """--hp NAME=VALUE pairs, read as the training job reads them (JSON, else text; c_grid=10,30)."""
    from docflow_training.entry import job_config, parse_hyperparameters

    args = [f"--{pair}" for pair in pairs or []]
    if any("=" not in arg for arg in args):
        raise fail("--hp takes NAME=VALUE")
    try:
        values = {"family": family, "seed": seed, **parse_hyperparameters(args)}
        job_config(values)  # fail here, naming the known hyperparameters, not inside the job
    except ValidationError as exc:  # one line per bad value: --hp NAME=VALUE: what is expected
        problems = [
            f"--hp {'.'.join(str(part) for part in error['loc'])}={error.get('input')!r}: {error['msg']}"
            for error in exc.errors(include_url=False)
        ]
        raise fail("Invalid hyperparameters: " + "; ".join(problems)) from None
    except ValueError as exc:
        raise fail(f"Invalid hyperparameters: {exc}") from None
    return values


@app.command()
def train(
    data: Annotated[
        str, typer.Option(help="Labelled corpus: a folder per class of .txt files (with --sagemaker also s3://…).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the model directory here (with --no-track default: the set-up default model)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (training is deterministic for a seed).")] = 0,
    validation: Annotated[
        str | None, typer.Option(help="Labelled folder to evaluate and gate on (default: a held-out split of --data).")
    ] = None,
    hp: Annotated[
        list[str] | None,
        typer.Option("--hp", help="Hyperparameter NAME=VALUE (a TrainConfig or gate field, e.g. c_grid=10,30)."),
    ] = None,
    feedback: Annotated[bool, typer.Option("--feedback/--no-feedback", help="Add the labels users sent back.")] = True,
    track: Annotated[
        bool,
        typer.Option(
            "--track/--no-track",
            help="MLflow run, registry version, promotion gate, publish if promoted; or only train.",
        ),
    ] = True,
    sagemaker: Annotated[
        bool, typer.Option("--sagemaker", help="Run as a SageMaker training job (DOCFLOW_SAGEMAKER_* settings).")
    ] = False,
    instance_type: Annotated[str | None, typer.Option(help="SageMaker instance type (default ml.g5.xlarge).")] = None,
    spot: Annotated[bool, typer.Option("--spot", help="SageMaker managed spot training, with checkpoints.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="SageMaker: wait for the job to end.")] = False,
    home: Annotated[Path | None, typer.Option(help="State directory (default: DOCFLOW_HOME or ~/.docflow).")] = None,
    scans: Annotated[
        Path | None,
        typer.Option(
            help="Real labelled scans (class folders or a path,label CSV) to fit the model's scan head on: "
            "layout-aware scores and out-of-scope detection, with cross-validated figures. With --no-track."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes reading --scans (default: all cores).")] = None,
    family: Annotated[
        str,
        typer.Option(
            help="Model family: linear (TF-IDF + logistic regression, minutes on a CPU) or transformer "
            "(all-MiniLM-L6-v2 fine-tuned with PyTorch: CUDA when present; ~25 min an epoch on 2 CPU cores)."
        ),
    ] = "linear",
) -> None:
    """Train the classifier: MLflow run, registry version, promotion gate, published champion.

    The training job runs as a local process (or on SageMaker with --sagemaker); a promoted model is
    published to DOCFLOW_HOME/models, where `process` and `serve` find it. --no-track only trains."""
    try:
        from docflow_training.scan_head import ScanHeadError
        from docflow_training.train import TrainConfig, train_model
    except ImportError as exc:
        raise fail(f"Training needs the training extra: pip install -e '.[training]' ({exc})") from None
    from docflow.settings import DEFAULT_MODEL_DIR

    settings = load_settings(home=home)
    if family not in ("linear", "transformer"):
        raise fail(f"--family {family!r}: choose linear or transformer")
    hyperparameters = _hyperparameters(hp, seed, family)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    if sagemaker:
        from botocore.exceptions import BotoCoreError, ClientError

        from docflow_training.launch import SageMakerJobConfig, launch_sagemaker

        try:
            overrides: dict[str, Any] = {"instance_type": instance_type, "spot": spot}
            job = SageMakerJobConfig(**{k: v for k, v in overrides.items() if v})
            launch = launch_sagemaker(
                data,
                settings,
                job,
                hyperparameters=hyperparameters,
                validation=validation,
                include_feedback=feedback,
                wait=wait,
            )
        except (ValueError, ValidationError) as exc:
            raise fail(str(exc)) from None
        except (BotoCoreError, ClientError) as exc:  # no credentials, no region, a refused call
            raise fail(f"SageMaker: {exc}", 1) from None
        err.print(
            f"SageMaker training job {launch.job_name} on {launch.instance_type}{' (spot)' if launch.spot else ''}"
        )
        print(launch.model_dump_json(indent=2))
        return

    corpus = Path(data)
    for what, folder in (("corpus", data), ("validation", validation)):
        if folder and not Path(folder).is_dir():
            raise fail(f"No such {what} folder: {folder}")
    # The corpus layout and --out, checked here in one line each, not found wrong after minutes of training
    from docflow_training.data import CorpusError, corpus_classes
    from docflow_training.model_dir import model_dir_target_problem

    for option, folder in (("--data", data), ("--validation", validation)):
        if not folder:
            continue
        try:
            classes = corpus_classes(Path(folder))
        except CorpusError as exc:
            raise fail(f"{option} {folder}: {exc}") from None
        # users' labels (--feedback) may bring the training corpus its second class; nothing completes --validation
        if len(classes) < 2 and (option == "--validation" or not feedback):
            raise fail(f"{option} {folder}: need at least two classes, found {sorted(classes)}")
    if out is not None:
        out = out.resolve()  # `--out .` names the current folder
        problem = model_dir_target_problem(out)
        if problem:
            raise fail(f"--out: {problem}")
    if scans is not None and track:
        raise fail("--scans fits the scan head of a model trained with --no-track (tracked runs: not yet)")

    if not track:
        from docflow_training.entry import job_config

        target = out or DEFAULT_MODEL_DIR
        read = _read_scans(scans, settings, workers) if scans is not None else None
        job_settings = job_config(hyperparameters)
        try:
            if job_settings.family == "transformer":
                from docflow_training.train import add_scan_head
                from docflow_training.transformer import train_transformer

                metrics = train_transformer(corpus, target, job_settings.transformer, on_epoch=_print_epoch)
                if read:
                    metrics = add_scan_head(target, read, str(scans))
            else:
                config = TrainConfig(**job_settings.train.model_dump())
                metrics = train_model(corpus, target, config, scans=read, scans_source=str(scans) if scans else None)
        except ScanHeadError as exc:
            raise fail(f"--scans {scans}: {exc}") from None
        err.print(f"Model written to {target}")
        keys = ("accuracy", "macro_f1", "n_train", "n_holdout")
        summary = {k: metrics[k] for k in keys if k in metrics}
        if "real_scans" in metrics:
            cross_validated = metrics["real_scans"]["scan_head"]["cross_validated"]
            summary["real_scans_cross_validated"] = {k: v for k, v in cross_validated.items() if k != "predictions"}
        print(json.dumps(summary, indent=2))
        return

    from docflow.cli_model import registry_for
    from docflow_training.launch import JobFailedError, run_local_job
    from docflow_training.tracking import redact_secrets, redact_uri

    # The tracking store answers before minutes of training are spent, or this stops here in one line
    tracking = registry_for(settings).tracking

    def echo(line: str) -> None:  # the job's log, without the tracking server's password
        print(redact_secrets(line, tracking.uri), end="", file=sys.stderr, flush=True)

    try:
        result = run_local_job(
            corpus,
            settings,
            hyperparameters=hyperparameters,
            validation_dir=Path(validation) if validation else None,
            include_feedback=feedback,
            out_dir=out,
            tracking=tracking,
            echo=echo,
        )
    except JobFailedError as exc:
        raise fail(redact_secrets(str(exc), tracking.uri), 1) from None
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted: the training job was stopped; its MLflow run ends FAILED.[/yellow]")
        raise typer.Exit(130) from None
    decision = result.decision or {}
    uri = redact_uri(result.tracking_uri or tracking.uri)
    registered = f"{result.registered_model} v{result.version}" if result.version else "not registered"
    err.print(f"MLflow run {result.run_id} ({uri}): {registered}", markup=False)
    err.print(f"gate: {decision.get('summary', 'not run')}")
    for reason in decision.get("reasons") or []:
        err.print(f"  - {reason}")
    if result.published:
        err.print(f"champion v{result.version} published to {result.published['to']}")
        from docflow.cli_model import rescore_review_queue

        rescore_review_queue(settings)
    if result.model_dir:
        err.print(f"Model written to {result.model_dir}")
    summary = {
        "run_id": result.run_id,
        "version": result.version,
        "promoted": result.promoted,
        **{k: result.metrics.get(k) for k in ("accuracy", "macro_f1", "n_train", "n_holdout")},
        "n_feedback": result.n_feedback,
        "device": result.device.get("kind"),
    }
    print(json.dumps(summary, indent=2))


def _print_epoch(epoch: int, scores: dict[str, float]) -> None:
    err.print(f"epoch {epoch}: " + ", ".join(f"{name} {value:.4f}" for name, value in scores.items()), markup=False)


def _read_scans(folder: Path, settings: Any, workers: int | None) -> list[Any]:
    """The labelled scans under ``folder``, read by the pipeline's ExtractText, with a progress bar; cached in
    DOCFLOW_HOME/cache/scans so that fitting again does not read them again."""
    from docflow.evaluation import EvalInputError
    from docflow_training.scans import ScanReadError, read_scans

    if not folder.exists():
        raise fail(f"No such scans folder: {folder}")
    with _progress() as bar:
        task = bar.add_task("reading scans", total=None)
        try:
            read = read_scans(
                folder,
                settings.ocr,
                workers=workers,
                cache_dir=settings.home / "cache" / "scans",
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except (EvalInputError, ScanReadError) as exc:
            raise fail(f"--scans: {exc}") from None
    return read


@app.command("eval")
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

    from docflow.errors import ConfigurationError
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
    progress = _progress()
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


@app.command()
def drift(
    window_hours: Annotated[
        float | None,
        typer.Option(min=0.01, help="Hours of predictions to compare (default: DOCFLOW_DRIFT_WINDOW_HOURS, 24)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, help="PSI above which a signal has drifted (default: DOCFLOW_DRIFT_THRESHOLD, 0.2)."),
    ] = None,
    min_predictions: Annotated[
        int | None,
        typer.Option(min=1, help="Fewest predictions to score a window (default: DOCFLOW_DRIFT_MIN_PREDICTIONS)."),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Model whose baseline to compare with (default: as `process` resolves it).")
    ] = None,
    home: Annotated[Path | None, typer.Option(help="State directory (default: DOCFLOW_HOME or ~/.docflow).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="The report as one JSON object on stdout.")] = False,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift/--no-fail-on-drift", help="Exit 1 when a signal drifted.")
    ] = True,
    metrics_file: Annotated[
        Path | None,
        typer.Option(help="Also write drift_score{signal} there, in Prometheus text format (textfile collector)."),
    ] = None,
) -> None:
    """Compare the recent window of predictions with the model's held-out baseline: population stability
    index per signal (class distribution, prediction confidence). Exit 1 on drift; 2 when there is no baseline
    to compare with; 0 otherwise, a window too small to score included (verdict insufficient_data)."""
    from docflow import telemetry
    from docflow.context import build_context, resolve_model_dir
    from docflow.domain.drift import BaselineMissingError, check_drift
    from docflow.errors import ConfigurationError
    from docflow.models import utcnow

    settings = load_settings(
        home=home,
        model_dir=model_dir,
        drift_window_hours=window_hours,
        drift_threshold=threshold,
        drift_min_predictions=min_predictions,
    )
    if metrics_file is not None:
        reason = f"{metrics_file} is a folder" if metrics_file.is_dir() else unusable_dir(metrics_file.parent)
        if reason:
            raise fail(f"--metrics-file {metrics_file} cannot be written: {reason}")
    try:
        resolved = resolve_model_dir(settings)
        if not resolved.is_dir():
            given = "--model-dir" if model_dir else "DOCFLOW_MODEL_DIR" if settings.model_dir else "the default model"
            raise fail(f"The model folder {resolved} ({given}) does not exist")
        report = check_drift(
            build_context(settings).records,
            resolved,
            now=utcnow(),
            window_hours=settings.drift_window_hours,
            threshold=settings.drift_threshold,
            min_predictions=settings.drift_min_predictions,
        )
    except (BaselineMissingError, ConfigurationError) as exc:
        raise fail(str(exc)) from None

    # Only drift_score: the file sits beside the pipeline's docflow.prom in one textfile-collector folder,
    # where a series written by both files is an error on every scrape.
    sink = telemetry.PrometheusSink(signals=[telemetry.DRIFT_SCORE])
    previous = telemetry.configure(sink)
    try:
        for signal in report.signals:
            if signal.psi is not None:
                telemetry.drift_score(str(signal.signal), signal.psi)
    finally:
        telemetry.configure(previous)
    if metrics_file:
        try:
            err.print(f"drift scores written to {sink.write_textfile(metrics_file)}", markup=False)
        except OSError as exc:
            raise fail(f"--metrics-file {metrics_file} cannot be written: {exc.strerror or exc}") from None

    if json_output:
        print(report.model_dump_json(indent=2))
    else:
        _print_drift(report, resolved)
    if report.verdict == "drift" and fail_on_drift:
        raise typer.Exit(1)


def _print_drift(report: DriftReport, model_dir: Path) -> None:
    out = Console() if Console().is_terminal else Console(width=160)
    start, end = report.window_start, report.window_end
    hours = (end - start).total_seconds() / 3600 if start and end else 0.0
    out.print(
        f"model {report.model_name} v{report.model_version} ({model_dir}); last {hours:g} h: "
        f"{report.n_predictions} predictions"
        + (f" ({report.n_other_versions} by other model versions, not compared)" if report.n_other_versions else "")
    )
    style = {"stable": "green", "drift": "bold red", "insufficient_data": "yellow"}
    summary = Table(title=f"drift (PSI; above {report.threshold:g} = drift)")
    for column in ("signal", "PSI", "verdict"):
        summary.add_column(column)
    for s in report.signals:
        psi = f"{s.psi:.4f}" if s.psi is not None else "-"
        summary.add_row(str(s.signal), psi, f"[{style[s.verdict]}]{s.verdict}[/]")
    out.print(summary)
    for s in report.signals:
        psi = f"PSI {s.psi:.4f}" if s.psi is not None else "no PSI"
        out.print(f"\n{s.signal}: baseline vs window ({psi}, [{style[s.verdict]}]{s.verdict}[/])")
        detail = Table()
        for column in ("bin" if s.signal == "prediction_confidence" else "class", "baseline %", "window %"):
            detail.add_column(column)
        for label, share in s.baseline.items():
            detail.add_row(label, f"{100 * share:.1f}", f"{100 * s.window.get(label, 0.0):.1f}")
        out.print(detail)
    if report.verdict == "insufficient_data":
        out.print(
            f"[yellow]{report.n_predictions} predictions in the window, fewer than {report.min_predictions}: "
            "no score (PSI of a small sample is mostly noise).[/yellow]"
        )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface (without DOCFLOW_API_KEY: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=0, help="Pipeline worker processes (0: one thread).")] = os.cpu_count()
    or 1,
    home: Annotated[Path | None, typer.Option(help="State directory (default: DOCFLOW_HOME or ~/.docflow).")] = None,
) -> None:
    """Serve the REST API (Swagger UI at /docs) on the local stores, with background workers."""
    from docflow.api.server import serve as serve_api
    from docflow.errors import ConfigurationError

    settings = load_settings(home=home)
    try:
        serve_api(host, port, workers, settings)
    except ConfigurationError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:  # the API's own settings (DOCFLOW_API_*)
        raise settings_failure(exc) from None


@app.command()
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
