"""`docflow drift`: the recent window of predictions against the model's held-out baseline (PSI per signal).

Lazy imports: the stores, the model source and the drift computation are imported where they are used, in
the command (docflow.context, docflow.domain.drift and docflow.telemetry: ~15 ms together), so that `docflow
--help` and the other commands do not pay for them. What is imported at the top is light (typer, rich,
docflow.errors, docflow.values).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from docflow.cli.common import HomeOption, err, fail, load_settings, unusable_dir
from docflow.errors import ConfigurationError
from docflow.values import utcnow

if TYPE_CHECKING:
    from docflow.domain.drift import DriftReport


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
    home: HomeOption = None,
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
