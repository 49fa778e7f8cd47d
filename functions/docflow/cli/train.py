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
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import ValidationError

from docflow.cli.common import HomeOption, err, fail, load_settings, progress_bar, registry_for
from docflow.cli.model import rescore_review_queue
from docflow.settings import DEFAULT_MODEL_DIR, Settings

if TYPE_CHECKING:
    from docflow_training.entry import JobConfig

FAMILIES = ("linear", "transformer", "combined")  # docflow_training.families.FAMILIES (not imported: heavy)


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
class ValidationScans:
    """--validation given as real labelled scans, as plan_training found them (nothing read yet): the scans of
    the training data's classes become the job's validation channel once read (``prepare_validation``)."""

    folder: Path
    classes: tuple[str, ...]  # the training data's classes (canonical) that have scans here
    n_scans: int  # every scan and PDF under the folder
    n_kept: int  # those of ``classes``
    left_out: dict[str, int]  # scans of classes the training data lacks, by class


@dataclass(frozen=True)
class TrainingPlan:
    """What `docflow train` runs.

    ``where``: "sagemaker" (a SageMaker training job on ``data``), "local" (--no-track: fit here and write the
    model folder ``out``, with a scan head when ``scans``) or "tracked" (the training job as a local process:
    MLflow run, registry version, promotion gate, publish if promoted; also written to ``out`` when given).
    ``job`` is the job's config read from ``hyperparameters``: its ``family`` is the one trained (--family,
    unless --hp family=… says otherwise). ``validation_scans``: --validation is a folder of real scans, to be read
    into a text corpus that becomes ``validation`` (``prepare_validation``); until then ``validation`` is None."""

    where: Literal["sagemaker", "local", "tracked"]
    data: str
    hyperparameters: dict[str, object]
    job: JobConfig
    validation: str | None = None
    validation_scans: ValidationScans | None = None
    feedback: bool = True
    out: Path | None = None
    scans: Path | None = None
    sagemaker_job: dict[str, Any] = field(default_factory=dict)  # SageMakerJobConfig fields given
    wait: bool = False


def plan_training(options: TrainOptions) -> TrainingPlan:
    """What to run for ``options``, or TrainingRefused: a bad family or hyperparameter, a missing or unusable
    corpus, an --out that would replace other files, --scans on a tracked run — each found here in one line,
    not after minutes of training. With --sagemaker the corpus and --out are the job's to check (s3://…),
    except a local --validation folder of real scans, matched here against the corpus's classes.

    --validation is a text corpus (``<class>/*.txt``) or a folder of real labelled scans (class folders of
    images and PDFs, or a labels.csv: what ``read_scans`` reads); scans are only listed here (``ValidationScans``),
    read later by ``prepare_validation``."""
    from docflow_training.data import CorpusError, corpus_classes
    from docflow_training.model_dir import model_dir_target_problem

    if options.family not in FAMILIES:
        raise TrainingRefused(f"--family {options.family!r}: choose linear, transformer or combined")
    hyperparameters, job = _hyperparameters(options.hp, options.seed, options.family)
    if job.family == "combined":
        hyperparameters, job = _combined_plan(options, hyperparameters, job)
    scans = _validation_scans(options)
    run: dict[str, Any] = {
        "data": options.data,
        "hyperparameters": hyperparameters,
        "job": job,
        "validation": None if scans else options.validation,
        "validation_scans": scans,
        "feedback": options.feedback,
    }
    if options.sagemaker:
        given: dict[str, Any] = {"instance_type": options.instance_type, "spot": options.spot}
        sagemaker_job = {k: v for k, v in given.items() if v}
        return TrainingPlan("sagemaker", **run, sagemaker_job=sagemaker_job, wait=options.wait)

    for what, folder in (("corpus", options.data), ("validation", options.validation)):
        if folder and not Path(folder).is_dir():
            raise TrainingRefused(f"No such {what} folder: {folder}")
    for option, folder in (("--data", options.data), ("--validation", None if scans else options.validation)):
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


def _combined_plan(
    options: TrainOptions, hyperparameters: dict[str, object], job: JobConfig
) -> tuple[dict[str, object], JobConfig]:
    """The combined family is a tracked job (its model is judged by the gate like any challenger): --no-track
    is refused, as is partner_dir with --sagemaker (a local folder the job's container cannot read); a local
    partner_dir must exist and is passed on as an absolute path (the job runs in a folder of its own)."""
    if not options.track:
        raise TrainingRefused(
            "--family combined runs as a tracked job (MLflow run, registry version, gate); for a model folder "
            "only, train each family with --no-track and join them with `docflow model combine`"
        )
    partner_dir = job.combined.partner_dir
    if partner_dir is None:
        return hyperparameters, job
    if options.sagemaker:
        raise TrainingRefused(
            f"--hp partner_dir={partner_dir}: a SageMaker job cannot read a local model folder; on SageMaker the "
            "combined family trains its transformer (leave partner_dir out)"
        )
    folder = Path(partner_dir).expanduser().resolve()
    if not folder.is_dir():
        raise TrainingRefused(f"--hp partner_dir={partner_dir}: no such model folder")
    hyperparameters = {**hyperparameters, "partner_dir": str(folder)}
    return hyperparameters, job.model_copy(
        update={"combined": job.combined.model_copy(update={"partner_dir": str(folder)})}
    )


def _validation_scans(options: TrainOptions) -> ValidationScans | None:
    """--validation as real labelled scans, listed and matched against the training corpus's classes; None
    when it is no local folder or a text corpus (as before: checked by plan_training, or by the job for
    --sagemaker); TrainingRefused when it is neither a corpus nor scans, or has scans of fewer than two of the
    training data's classes."""
    from docflow.evaluation import EvalInputError
    from docflow_training.data import CorpusError, corpus_classes
    from docflow_training.scans import LABELS_CSV, labelled_scan_files

    given = options.validation
    if not given or given.startswith("s3://") or not Path(given).is_dir():
        return None
    folder = Path(given)
    try:
        corpus_classes(folder)
        return None  # a text corpus: as before
    except CorpusError:
        pass
    neither = (
        f"--validation {given}: neither a text corpus (<class>/*.txt) nor labelled scans "
        f"(class folders of images or PDFs, or a {LABELS_CSV})"
    )
    has_classes = (folder / LABELS_CSV).is_file() or any(
        p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()
    )
    try:
        files = labelled_scan_files(folder) if has_classes else []
    except EvalInputError as exc:
        raise TrainingRefused(f"{neither}: {exc}") from None
    if not files:
        raise TrainingRefused(neither)
    known = _training_classes(options.data)
    labels = [label for _, label in files]
    kept = sorted({label for label in labels if label in known})
    left_out = {label: labels.count(label) for label in sorted(set(labels) - known)}
    if len(kept) < 2:
        raise TrainingRefused(
            f"--validation {given}: need scans of at least two of the training data's classes, found "
            f"{kept or 'none'} (the training data has {sorted(known)})"
        )
    return ValidationScans(folder, tuple(kept), len(files), len(labels) - sum(left_out.values()), left_out)


def _training_classes(data: str) -> set[str]:
    """The canonical classes of the training corpus ``data``: its class folders (local, or listed in S3)."""
    from docflow_training.data import CorpusError, canonical_label, corpus_classes

    if not data.startswith("s3://"):
        try:
            return set(corpus_classes(Path(data)))
        except CorpusError as exc:
            raise TrainingRefused(f"--data {data}: {exc}") from None
    # Imported here: boto3 only for an S3 corpus matched against --validation scans
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = data.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    try:
        pages = (
            boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        )
        folders = [p["Prefix"][len(prefix) :].strip("/") for page in pages for p in page.get("CommonPrefixes", [])]
    except (BotoCoreError, ClientError) as exc:
        raise TrainingRefused(f"--data {data}: its class folders could not be listed: {exc}") from None
    return {canonical_label(name) for name in folders if name and not name.startswith(".")}


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
    read = _read_scans(scans.folder, settings, workers, option="--validation", labels=scans.classes)
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


def _read_scans(
    folder: Path,
    settings: Settings,
    workers: int | None,
    *,
    option: str = "--scans",
    labels: Sequence[str] | None = None,
) -> list[Any]:
    """The labelled scans under ``folder`` (``labels``: of these classes only), read by the pipeline's
    ExtractText, with a progress bar; cached in DOCFLOW_HOME/cache/scans so that fitting again does not read
    them again."""
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
                labels=labels,
            )
        except (EvalInputError, ScanReadError) as exc:
            raise fail(f"{option}: {exc}") from None
    return read
