"""`docflow`: the command line of the embedded default (no AWS, no Docker).

This module is the Typer app and its command list (the console script is ``docflow.cli:main``; ``python -m
docflow.cli`` runs __main__.py). The commands live beside it: process.py (process, eval, serve, samples),
drift.py, train.py (the command) and train_plan.py (``plan_training``: what it runs), model.py (the
`docflow model …` group) and combine.py (`docflow model combine`, mounted on that group here); common.py holds
what they share (``fail``, ``load_settings``, the progress bar, the MLflow tracking store's errors).

Lazy imports: none here. The command modules import their heavy dependencies (the pipeline, MLflow,
scikit-learn, torch, boto3) inside the commands, so that `docflow --help` starts without them; each says so
at its top.
"""

from __future__ import annotations

import typer

from docflow.cli import combine, drift, process, train
from docflow.cli.model import model_app

app = typer.Typer(
    name="docflow",
    help="Classify documents (scans, photos, PDFs) by type: validate, extract text, classify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # an unexpected error's traceback must not print settings or secrets
)
model_app.command("combine")(combine.combine)
app.add_typer(model_app, name="model")
app.command()(process.process)
app.command()(train.train)
app.command("eval")(process.eval_command)
app.command()(drift.drift)
app.command()(process.serve)
app.command()(process.samples)


def main() -> None:
    app()
