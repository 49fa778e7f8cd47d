"""`docflow train`: the command reads its options and hands them to ``plan_training``, which decides what runs —
a SageMaker training job (--sagemaker), a fit in this process that only writes the model folder (--no-track,
with a scan head on --scans), or the tracked training job (MLflow run, registry version, gate, publish) — or
refuses the options in one line before anything is trained. The command then runs the plan.

Lazy imports: the training package (scikit-learn, ONNX and MLflow: seconds, torch for the transformer
family, boto3 and the SageMaker SDK for --sagemaker) is imported where it is used, inside the functions below,
so that `docflow --help` and the other commands never load it; it is also looked up at call time so that tests
can replace its functions (the training job, the registry). What is imported at the top is light (typer,
pydantic, docflow.settings, docflow.cli.common, docflow.cli.model).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import ValidationError

from docflow.cli.common import HomeOption, err, fail, load_settings, progress_bar, registry_for
from docflow.cli.model import rescore_review_queue
from docflow.settings import DEFAULT_MODEL_DIR, Settings

if TYPE_CHECKING:
    from docflow_training.entry import JobConfig

FAMILIES = ("linear", "transformer")


class TrainingRefused(ValueError):
    """Options `docflow train` refuses before anything is trained; the message is the one line it shows."""


@dataclass(frozen=True)
class TrainOptions:
    """The options of `docflow train` that decide what it runs (as given on the command line)."""

    data: str
    out: Path | None = None
    seed: int = 0
    validation: str | None = None
    hp: Sequence[str] = ()
    feedback: bool = True
    track: bool = True
    sagemaker: bool = False
    instance_type: str | None = None
    spot: bool = False
    wait: bool = False
    scans: Path | None = None
    family: str = "linear"


@dataclass(frozen=True)
class TrainingPlan:
    """What `docflow train` runs.

    ``where``: "sagemaker" (a SageMaker training job on ``data``), "local" (--no-track: fit here and write the
    model folder ``out``, with a scan head when ``scans``) or "tracked" (the training job as a local process:
    MLflow run, registry version, promotion gate, publish if promoted; also written to ``out`` when given).
    ``job`` is the job's config read from ``hyperparameters``: its ``family`` is the one trained (--family,
    unless --hp family=… says otherwise)."""

    where: Literal["sagemaker", "local", "tracked"]
    data: str
    hyperparameters: dict[str, object]
    job: JobConfig
    validation: str | None = None
    feedback: bool = True
    out: Path | None = None
    scans: Path | None = None
    sagemaker_job: dict[str, Any] = field(default_factory=dict)  # SageMakerJobConfig fields given
    wait: bool = False


def plan_training(options: TrainOptions) -> TrainingPlan:
    """What to run for ``options``, or TrainingRefused: a bad family or hyperparameter, a missing or unusable
    corpus, an --out that would replace other files, --scans on a tracked run — each found here in one line,
    not after minutes of training. With --sagemaker the corpus and --out are the job's to check (s3://…)."""
    from docflow_training.data import CorpusError, corpus_classes
    from docflow_training.model_dir import model_dir_target_problem

    if options.family not in FAMILIES:
        raise TrainingRefused(f"--family {options.family!r}: choose linear or transformer")
    hyperparameters, job = _hyperparameters(options.hp, options.seed, options.family)
    run: dict[str, Any] = {
        "data": options.data,
        "hyperparameters": hyperparameters,
        "job": job,
        "validation": options.validation,
        "feedback": options.feedback,
    }
    if options.sagemaker:
        given: dict[str, Any] = {"instance_type": options.instance_type, "spot": options.spot}
        sagemaker_job = {k: v for k, v in given.items() if v}
        return TrainingPlan("sagemaker", **run, sagemaker_job=sagemaker_job, wait=options.wait)

    for what, folder in (("corpus", options.data), ("validation", options.validation)):
        if folder and not Path(folder).is_dir():
            raise TrainingRefused(f"No such {what} folder: {folder}")
    for option, folder in (("--data", options.data), ("--validation", options.validation)):
        if not folder:
            continue
        try:
            classes = corpus_classes(Path(folder))
        except CorpusError as exc:
            raise TrainingRefused(f"{option} {folder}: {exc}") from None
        # users' labels (--feedback) may bring the training corpus its second class; nothing completes --validation
        if len(classes) < 2 and (option == "--validation" or not options.feedback):
            raise TrainingRefused(f"{option} {folder}: need at least two classes, found {sorted(classes)}")
    out = options.out
    if out is not None:
        out = out.resolve()  # `--out .` names the current folder
        problem = model_dir_target_problem(out)
        if problem:
            raise TrainingRefused(f"--out: {problem}")
    if options.scans is not None and options.track:
        raise TrainingRefused("--scans fits the scan head of a model trained with --no-track (tracked runs: not yet)")
    if not options.track:
        return TrainingPlan("local", **run, out=out or DEFAULT_MODEL_DIR, scans=options.scans)
    return TrainingPlan("tracked", **run, out=out)


def _hyperparameters(pairs: Sequence[str], seed: int, family: str) -> tuple[dict[str, object], JobConfig]:
    """--hp NAME=VALUE pairs, read as the training job reads them (JSON, else text; c_grid=10,30), and the
    job's config they make."""
    from docflow_training.entry import job_config, parse_hyperparameters

    args = [f"--{pair}" for pair in pairs]
    if any("=" not in arg for arg in args):
        raise TrainingRefused("--hp takes NAME=VALUE")
    try:
        values = {"family": family, "seed": seed, **parse_hyperparameters(args)}
        job = job_config(values)  # fail here, naming the known hyperparameters, not inside the job
    except ValidationError as exc:  # one line per bad value: --hp NAME=VALUE: what is expected
        problems = [
            f"--hp {'.'.join(str(part) for part in error['loc'])}={error.get('input')!r}: {error['msg']}"
            for error in exc.errors(include_url=False)
        ]
        raise TrainingRefused("Invalid hyperparameters: " + "; ".join(problems)) from None
    except ValueError as exc:
        raise TrainingRefused(f"Invalid hyperparameters: {exc}") from None
    return values, job


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
    home: HomeOption = None,
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
    if plan.where == "sagemaker":
        _run_sagemaker(plan, settings)
    elif plan.where == "local":
        _run_local(plan, settings, workers)
    else:
        _run_tracked(plan, settings)


def _run_sagemaker(plan: TrainingPlan, settings: Settings) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from docflow_training.launch import SageMakerJobConfig, launch_sagemaker

    try:
        launch = launch_sagemaker(
            plan.data,
            settings,
            SageMakerJobConfig(**plan.sagemaker_job),
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
    read = _read_scans(scans, settings, workers) if scans is not None else None
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


def _read_scans(folder: Path, settings: Settings, workers: int | None) -> list[Any]:
    """The labelled scans under ``folder``, read by the pipeline's ExtractText, with a progress bar; cached in
    DOCFLOW_HOME/cache/scans so that fitting again does not read them again."""
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
            )
        except (EvalInputError, ScanReadError) as exc:
            raise fail(f"--scans: {exc}") from None
    return read
