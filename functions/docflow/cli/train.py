"""`docflow train`: the command reads its options, hands them to ``plan_training`` (docflow.cli.train_plan),
which decides what runs or refuses the options in one line before anything is trained, and then runs the plan:
a SageMaker training job (--sagemaker), a fit in this process that only writes the model folder (--no-track,
with a scan head on --scans), or the tracked training job (MLflow run, registry version, gate, publish).
--validation given as real scans is read into a text corpus first (``prepare_validation``).

Lazy imports: the training package (scikit-learn, ONNX and MLflow: seconds, torch for the transformer
family, boto3 and the SageMaker SDK for --sagemaker) is imported where it is used, inside the functions below,
so that `docflow --help` and the other commands never load it; it is also looked up at call time so that tests
can replace its functions (the training job, the registry). What is imported at the top is light (typer,
pydantic, docflow.settings, docflow.cli.common, docflow.cli.model, docflow.cli.train_plan).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from docflow.cli.common import (
    HomeOption,
    err,
    fail,
    load_settings,
    read_labelled_scans,
    registry_for,
    settings_failure,
)
from docflow.cli.model import rescore_review_queue
from docflow.cli.train_plan import TrainingPlan, TrainingRefused, TrainOptions, plan_training
from docflow.settings import Settings


def prepare_validation(plan: TrainingPlan, settings: Settings, into: Path, workers: int | None = None) -> TrainingPlan:
    """``plan`` with its --validation scans turned into its validation channel: the scans of the training data's
    classes read by the pipeline's ExtractText (progress on stderr; cached in DOCFLOW_HOME/cache/scans, so read
    once), written as a text corpus in ``into`` (``<class>/<file stem>.txt``; a scan with no text is an empty
    document) with a holdout_source.json that the job records as the held-out set's source. The scans of
    classes the training data lacks are left out, in one line on stderr. A plan with no scans comes back as
    it is; TrainingRefused when fewer than two classes are left once read."""
    from docflow_training.entry import HOLDOUT_SOURCE_FILE
    from docflow_training.scans import ScanCorpusError, reader_description, write_scan_corpus

    scans = plan.validation_scans
    if scans is None:
        return plan
    if scans.left_out:
        shown = ", ".join(f"{label} {n}" for label, n in scans.left_out.items())
        err.print(
            f"--validation: {sum(scans.left_out.values())} of {scans.n_scans} scans left out, of "
            f"{len(scans.left_out)} classes the training data lacks ({shown})",
            markup=False,
            soft_wrap=True,
        )
    read = read_labelled_scans(scans.folder, settings, workers, option="--validation", labels=scans.classes)
    try:
        corpus = write_scan_corpus(read, scans.classes, into)
    except ScanCorpusError as exc:
        raise TrainingRefused(f"--validation {scans.folder}: {exc}") from None
    unread = scans.n_kept - corpus.n_documents
    source = (
        f"real scans ({corpus.n_documents} of {scans.n_scans} in {scans.folder}, the training data's classes; "
        f"OCR'd by {reader_description(settings.ocr)})"
    )
    record = {
        "holdout_source": source,
        "scans": str(scans.folder.resolve()),
        "n_scans": scans.n_scans,
        "classes": corpus.classes,
        "left_out": scans.left_out,
        "unreadable": unread,
        "empty": corpus.empty,
    }
    (into / HOLDOUT_SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    err.print(
        f"--validation: gating on {corpus.n_documents} real scans in {len(corpus.classes)} classes"
        + (f" ({corpus.empty} with no text, kept)" if corpus.empty else "")
        + (f"; {unread} could not be read" if unread else ""),
        markup=False,
        soft_wrap=True,
    )
    return replace(plan, validation=str(into), validation_scans=None)


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
        str | None,
        typer.Option(
            help="Labelled folder to evaluate and gate on (default: a held-out split of --data): a text corpus "
            "like --data, or real scans (class folders or a labels.csv; read here, of --data's classes only)."
        ),
    ] = None,
    hp: Annotated[
        list[str] | None,
        typer.Option(
            "--hp",
            help="Hyperparameter NAME=VALUE (a field of the family's config or the gate's, e.g. c_grid=10,30; "
            "combined: transformer.max_length=64 for one member's).",
        ),
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
    home: HomeOption = None,
    scans: Annotated[
        Path | None,
        typer.Option(
            help="Real labelled scans (class folders or a path,label CSV) to fit the model's scan head on: "
            "layout-aware scores and out-of-scope detection, with cross-validated figures. With --no-track."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes reading --scans or --validation scans (default: all cores).")
    ] = None,
    family: Annotated[
        str,
        typer.Option(
            help="Model family: linear (TF-IDF + logistic regression, minutes on a CPU), transformer "
            "(all-MiniLM-L6-v2 fine-tuned with PyTorch: CUDA when present; ~25 min an epoch on 2 CPU cores), or "
            "combined (both on one split, served as one model; --hp partner_weight=0.5, partner_dir=DIR to reuse "
            "a transformer; tracked runs only)."
        ),
    ] = "linear",
) -> None:
    """Train the classifier: MLflow run, registry version, promotion gate, published champion.

    The training job runs as a local process (or on SageMaker with --sagemaker); a promoted model is
    published to DOCFLOW_HOME/models, where `process` and `serve` find it. --no-track only trains."""
    try:
        for module in ("docflow_training.scan_head", "docflow_training.train"):
            importlib.import_module(module)
    except ImportError as exc:
        raise fail(f"Training needs the training extra: pip install -e '.[training]' ({exc})") from None
    settings = load_settings(home=home)
    options = TrainOptions(
        data=data,
        out=out,
        seed=seed,
        validation=validation,
        hp=tuple(hp or ()),
        feedback=feedback,
        track=track,
        sagemaker=sagemaker,
        instance_type=instance_type,
        spot=spot,
        wait=wait,
        scans=scans,
        family=family,
    )
    try:
        plan = plan_training(options)
    except TrainingRefused as exc:
        raise fail(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # --validation scans: read into a text corpus that lives as long as the run (a local fit has no gate: unread)
    with tempfile.TemporaryDirectory(prefix="docflow-validation-") as converted:
        if plan.where != "local":
            try:
                plan = prepare_validation(plan, settings, Path(converted), workers)
            except TrainingRefused as exc:
                raise fail(str(exc)) from None
        if plan.where == "sagemaker":
            _run_sagemaker(plan, settings)
        elif plan.where == "local":
            _run_local(plan, settings, workers)
        else:
            _run_tracked(plan, settings)


def _run_sagemaker(plan: TrainingPlan, settings: Settings) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from docflow_training.launch import SageMakerJobConfig, launch_sagemaker

    assert plan.validation_scans is None, "prepare_validation first: the scans are not the job's channel yet"

    options = {"instance_type": "--instance-type", "spot": "--spot"}
    try:
        job = SageMakerJobConfig(**plan.sagemaker_job)
    except ValidationError as exc:  # one line per bad DOCFLOW_SAGEMAKER_* variable (or option)
        given_as = {field: options[field] for field in plan.sagemaker_job if field in options}
        raise settings_failure(exc, given_as, prefix="DOCFLOW_SAGEMAKER_") from None
    try:
        launch = launch_sagemaker(
            plan.data,
            settings,
            job,
            hyperparameters=plan.hyperparameters,
            validation=plan.validation,
            include_feedback=plan.feedback,
            wait=plan.wait,
        )
    except (ValueError, ValidationError) as exc:
        raise fail(str(exc)) from None
    except (BotoCoreError, ClientError) as exc:  # no credentials, no region, a refused call
        raise fail(f"SageMaker: {exc}", 1) from None
    err.print(f"SageMaker training job {launch.job_name} on {launch.instance_type}{' (spot)' if launch.spot else ''}")
    print(launch.model_dump_json(indent=2))


def _run_local(plan: TrainingPlan, settings: Settings, workers: int | None) -> None:
    """--no-track: fit here, write the model folder (and its scan head), print the held-out figures."""
    from docflow_training.scan_head import ScanHeadError
    from docflow_training.train import TrainConfig, train_model

    target, scans = plan.out, plan.scans
    assert target is not None  # plan_training gives a local fit its folder
    read = read_labelled_scans(scans, settings, workers) if scans is not None else None
    try:
        if plan.job.family == "transformer":
            from docflow_training.train import add_scan_head
            from docflow_training.transformer import train_transformer

            metrics = train_transformer(Path(plan.data), target, plan.job.transformer, on_epoch=_print_epoch)
            if read:
                metrics = add_scan_head(target, read, str(scans))
        else:
            config = TrainConfig(**plan.job.train.model_dump())
            metrics = train_model(
                Path(plan.data), target, config, scans=read, scans_source=str(scans) if scans else None
            )
    except ScanHeadError as exc:
        raise fail(f"--scans {scans}: {exc}") from None
    err.print(f"Model written to {target}")
    keys = ("accuracy", "macro_f1", "n_train", "n_holdout")
    summary = {k: metrics[k] for k in keys if k in metrics}
    if "real_scans" in metrics:
        cross_validated = metrics["real_scans"]["scan_head"]["cross_validated"]
        summary["real_scans_cross_validated"] = {k: v for k, v in cross_validated.items() if k != "predictions"}
    print(json.dumps(summary, indent=2))


def _run_tracked(plan: TrainingPlan, settings: Settings) -> None:
    """The training job as a local process: MLflow run, registry version, gate, publish (and re-score the
    review queue) if promoted; the run's summary as JSON on stdout."""
    from docflow_training.launch import JobFailedError, run_local_job
    from docflow_training.tracking import redact_secrets, redact_uri

    assert plan.validation_scans is None, "prepare_validation first: the scans are not the job's channel yet"

    # The tracking store answers before minutes of training are spent, or this stops here in one line
    tracking = registry_for(settings).tracking

    def echo(line: str) -> None:  # the job's log, without the tracking server's password
        print(redact_secrets(line, tracking.uri), end="", file=sys.stderr, flush=True)

    try:
        result = run_local_job(
            Path(plan.data),
            settings,
            hyperparameters=plan.hyperparameters,
            validation_dir=Path(plan.validation) if plan.validation else None,
            include_feedback=plan.feedback,
            out_dir=plan.out,
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
