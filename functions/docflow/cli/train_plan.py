"""What `docflow train` runs, decided from its options before anything is trained: ``plan_training`` turns
``TrainOptions`` into a ``TrainingPlan`` — a SageMaker training job (--sagemaker), a fit in this process that
only writes the model folder (--no-track, with a scan head on --scans), or the tracked training job (MLflow
run, registry version, gate, publish) — or refuses the options in one line (``TrainingRefused``). It reads
only folder listings; the command (docflow.cli.train) runs the plan.

Lazy imports: docflow_training (scikit-learn, ONNX, MLflow: seconds) is imported where it is used, inside the
functions below, so that `docflow --help` and the other commands never load it; boto3 likewise, only to list
an S3 corpus's classes. What is imported at the top is light (pydantic, docflow.settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from docflow.domain.class_names import canonical_class
from docflow.settings import DEFAULT_MODEL_DIR

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
    from docflow_training.data import CorpusError, corpus_classes

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
    return {canonical_class(name) for name in folders if name and not name.startswith(".")}


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
