"""The training job's entry point: SageMaker's training-container contract, run the same way on
SageMaker and as a local process (``docflow train``; see ``launch.py``).

Contract (defaults are the container's ``/opt/ml`` paths)::

    SM_CHANNEL_TRAIN        the corpus: a folder per class of .txt files   /opt/ml/input/data/train
    SM_CHANNEL_VALIDATION   optional labelled folder: the held-out set      /opt/ml/input/data/validation
                            (its holdout_source.json, if any, says where it came from, e.g. real scans)
    SM_CHANNEL_FEEDBACK     optional users' labels, a folder per class      /opt/ml/input/data/feedback
    SM_MODEL_DIR            the model directory (SageMaker tars it)         /opt/ml/model
    SM_OUTPUT_DATA_DIR      result.json, confusion_matrix.png, the gate's  /opt/ml/output/data
                            holdout.jsonl and train_manifest.json
    checkpoints             DOCFLOW_CHECKPOINT_DIR, else /opt/ml/checkpoints if it exists (spot)
    MLFLOW_TRACKING_URI     where the run and the registry are (a managed MLflow server's ARN on AWS)
    hyperparameters         ``--name value`` pairs: ``family`` (linear, the default, transformer or
                            combined), then any field of that family's config (linear: TrainConfig's
                            seed, c_grid, vocab_size, …; transformer: families.TransformerConfig's
                            epochs, max_train_docs, batch_size, …; combined: both, see
                            ``job_config``, and families.CombinedConfig's partner_weight, partner_dir),
                            the gate's (min_macro_f1_gain, max_recall_drop, min_eval_docs), and the
                            job's (register_version, registered_model, publish_to, corpus_uri, run_name)

Steps: assemble the corpus (train channel + feedback) → train_model → MLflow run (registered as a
new version) → promotion gate against the champion → if promoted and ``publish_to`` is set, publish.

The combined family trains the linear model and the transformer on the same corpus with the same seed and
held-out fraction (so the same held-out split, checked) and ships ``combine.combine_model_dirs`` of the two as
the job's model, scored on that split: the rest of the job treats it as any challenger. Its metrics.json is the
combination's, with the linear model's cross-validation, the transformer's epochs and both members' scores
added, so the MLflow run shows the combination's held-out scores, the transformer's curves and its members'.
``partner_dir`` combines a transformer trained earlier on the same corpus and split instead of training one
(local runs only: on SageMaker the folder is not in the container).

Device. The job looks for CUDA (``nvidia-smi``, ``SM_NUM_GPUS``) and records what it found as the
``device`` param. The linear family trains on the CPU either way: TF-IDF features into a multinomial
logistic regression fitted by scikit-learn's Newton-CG on a sparse matrix, nothing for CUDA to
accelerate. The transformer family fine-tunes on CUDA when torch sees it (mixed precision), else on
the CPU; the ``device.fit`` param says which (the combined family: where its transformer was fine-tuned).

Checkpoints (spot). After the fit, the model directory, held-out set and training manifest go to
the checkpoint directory, and after the MLflow run its id and version do; a restarted job skips what
is done instead of refitting or registering a second version. The linear family's fit is one unit;
the transformer family checkpoints each epoch under ``<checkpoints>/transformer`` while it trains
(``docflow_training.checkpoints``), so a job stopped mid-fit resumes from its last finished epoch
(the per-epoch rows come back with it: the MLflow run, logged once after the fit, has every epoch),
and that checkpoint is removed once the job has recorded the model as trained. The combined family's
transformer checkpoints its epochs there too; its linear model, one unit, is fitted again on a restart.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from docflow.domain.class_names import canonical_class
from docflow.domain.model_files import CONFIG_FILE, METRICS_FILE, MODEL_FILES, PARTNER_CONFIG_FILE
from docflow_training.data import Document, dataset_digest, load_corpus
from docflow_training.families import FAMILIES, CombinedConfig, CombineError, Family, TransformerConfig
from docflow_training.registry import (
    GatePolicy,
    Registry,
    read_holdout,
    score_model,
    write_holdout,
    write_train_manifest,
)
from docflow_training.tracking import (
    HOLDOUT_FILE,
    REGISTERED_MODEL,
    TRAIN_MANIFEST_FILE,
    confusion_matrix_png,
    flat_params,
    log_training_run,
    redact_uri,
    resolve_tracking,
)
from docflow_training.train import TrainConfig, TrainingResult, run_training

logger = logging.getLogger("docflow_training.entry")

OPT_ML = Path("/opt/ml")
RESULT_FILE = "result.json"
STATE_FILE = "state.json"
# In a validation channel, beside its class folders: {"holdout_source": "<where its documents came from>", …}
HOLDOUT_SOURCE_FILE = "holdout_source.json"


class JobConfig(BaseModel):
    """Everything a run is told, validated once: the training config, the gate, and the job's own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Family = "linear"
    train: TrainConfig = Field(default_factory=TrainConfig)
    transformer: TransformerConfig = Field(default_factory=TransformerConfig)
    combined: CombinedConfig = Field(default_factory=CombinedConfig)
    gate: GatePolicy = Field(default_factory=GatePolicy)
    register_version: bool = True  # False: a tracked run only, no registry version, no gate
    registered_model: str = REGISTERED_MODEL
    publish_to: str | None = None  # "s3://<model bucket>/models" or a local models dir; used when promoted
    corpus_uri: str | None = None  # where the train channel came from (S3 URI or path), for the record
    run_name: str | None = None


_JOB_FIELDS = {"register_version", "registered_model", "publish_to", "corpus_uri", "run_name"}

# The combined family: its members' configs by the prefix that names one member's field (``transformer.epochs``).
_MEMBERS: dict[str, type[BaseModel]] = {"linear": TrainConfig, "transformer": TransformerConfig}
# Fields both members' configs have with the same meaning: a plain name sets both.
_SHARED_FIELDS = frozenset(
    {
        "seed",
        "holdout_fraction",
        "max_chars",
        "model_name",
        "eval_batch_size",
        "review_target_precision",
        "review_confidence",
    }
)
# ... of which these are never set per member: the members must hold out the same documents.
_SPLIT_FIELDS = frozenset({"seed", "holdout_fraction"})
# Fields both have with another meaning in each: a plain name is refused; ``linear.NAME`` / ``transformer.NAME``.
_AMBIGUOUS_FIELDS = {
    "max_length": "the linear model's tokens kept per document and the transformer's tokens per window",
    "version": "each member's version, and the combined model's version is a hash of both and the weight",
}


def parse_hyperparameters(argv: Sequence[str]) -> dict[str, Any]:
    """``--name value`` / ``--name=value`` pairs as SageMaker passes them; values are JSON when they
    parse as JSON (numbers, booleans, lists), else strings. Dashes in names become underscores."""
    out: dict[str, Any] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) < 3:
            raise ValueError(f"expected --name value, got {item!r}")
        if "=" in item:
            name, raw = item[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ValueError(f"{item} has no value")
            name, raw = item[2:], items[i + 1]
            i += 2
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[name.replace("-", "_")] = value
    return out


def _sequence_field(model: type[BaseModel], name: str) -> bool:
    annotation = model.model_fields[name].annotation
    return typing.get_origin(annotation) in (tuple, list)


def _coerce(model: type[BaseModel], name: str, value: Any) -> Any:
    # "1,10,30" or a lone 30 for a sequence field (c_grid): SageMaker hyperparameters are strings.
    if _sequence_field(model, name):
        if isinstance(value, str):
            return [
                json.loads(part) if re.fullmatch(r"[-+0-9.eE]+", part.strip()) else part.strip()
                for part in value.split(",")
                if part.strip()
            ]
        if not isinstance(value, list | tuple):
            return [value]
    return value


def job_config(hyperparameters: Mapping[str, Any]) -> JobConfig:
    """The job's config from its hyperparameters: ``family`` picks whose config the model's fields fill."""
    family = str(hyperparameters.get("family", "linear"))
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if family == "combined":
        return _combined_job_config(hyperparameters)
    model_type: type[BaseModel] = TransformerConfig if family == "transformer" else TrainConfig
    model_fields: dict[str, Any] = {}
    gate: dict[str, Any] = {}
    job: dict[str, Any] = {}
    unknown = []
    for name, value in hyperparameters.items():
        if name == "family":
            continue
        if name in model_type.model_fields:
            model_fields[name] = _coerce(model_type, name, value)
        elif name in GatePolicy.model_fields:
            gate[name] = value
        elif name in _JOB_FIELDS:
            job[name] = value
        else:
            unknown.append(name)
    if unknown:
        known = sorted({*model_type.model_fields, *GatePolicy.model_fields, *_JOB_FIELDS, "family"})
        raise ValueError(
            f"unknown hyperparameters for the {family} family {sorted(unknown)}; known: {', '.join(known)}"
        )
    models: dict[str, Any] = (
        {"transformer": TransformerConfig(**model_fields)}
        if family == "transformer"
        else {"train": TrainConfig(**model_fields)}
    )
    return JobConfig(family=family, gate=GatePolicy(**gate), **models, **job)


def _combined_job_config(hyperparameters: Mapping[str, Any]) -> JobConfig:
    """The combined family's config: a field of one member's config sets that member's, a field both have
    with one meaning (``_SHARED_FIELDS``: seed, holdout_fraction, max_chars, …) sets both, and one both have
    with two meanings (``_AMBIGUOUS_FIELDS``: max_length, version) is refused unless named for one member
    (``linear.max_length``, ``transformer.max_length``; a member's name wins over the plain one). seed and
    holdout_fraction are never per member (one held-out split). With ``partner_dir`` no transformer is
    trained: a hyperparameter only the transformer has is refused, not ignored."""
    members: dict[str, dict[str, Any]] = {"linear": {}, "transformer": {}}
    named: dict[str, dict[str, Any]] = {"linear": {}, "transformer": {}}  # linear.NAME / transformer.NAME
    combined: dict[str, Any] = {}
    gate: dict[str, Any] = {}
    job: dict[str, Any] = {}
    unknown: list[str] = []
    problems: list[str] = []
    transformer_only: list[str] = []
    for name, value in hyperparameters.items():
        member, dot, field = name.partition(".")
        if name == "family":
            continue
        if dot and member in _MEMBERS:
            model = _MEMBERS[member]
            if field not in model.model_fields:
                unknown.append(name)
            elif field in _SPLIT_FIELDS:
                problems.append(f"{name}: both members hold out the same documents; give {field} for both")
            else:
                named[member][field] = _coerce(model, field, value)
                if member == "transformer" and field not in _SHARED_FIELDS:
                    transformer_only.append(name)
        elif name in _AMBIGUOUS_FIELDS:
            problems.append(
                f"{name} is {_AMBIGUOUS_FIELDS[name]}: give linear.{name} or transformer.{name} for the combined family"
            )
        elif name in TrainConfig.model_fields or name in TransformerConfig.model_fields:
            for member, model in _MEMBERS.items():
                if name in model.model_fields:
                    members[member][name] = _coerce(model, name, value)
            if name not in TrainConfig.model_fields:
                transformer_only.append(name)
        elif name in CombinedConfig.model_fields:
            combined[name] = value
        elif name in GatePolicy.model_fields:
            gate[name] = value
        elif name in _JOB_FIELDS:
            job[name] = value
        else:
            unknown.append(name)
    if unknown:
        known = sorted(
            {*TrainConfig.model_fields, *TransformerConfig.model_fields, *CombinedConfig.model_fields}
            | {*GatePolicy.model_fields, *_JOB_FIELDS, "family"}
        )
        raise ValueError(
            f"unknown hyperparameters for the combined family {sorted(unknown)}; known: {', '.join(known)} "
            "(and linear.NAME or transformer.NAME for one member's field)"
        )
    if combined.get("partner_dir") and transformer_only:
        problems.append(
            f"partner_dir combines a transformer trained earlier, so the transformer's {sorted(transformer_only)} "
            "do not apply: leave them out, or partner_dir"
        )
    if problems:
        raise ValueError("; ".join(problems))
    return JobConfig(
        family="combined",
        train=TrainConfig(**{**members["linear"], **named["linear"]}),
        transformer=TransformerConfig(**{**members["transformer"], **named["transformer"]}),
        combined=CombinedConfig(**combined),
        gate=GatePolicy(**gate),
        **job,
    )


def check_job_environment(config: JobConfig, env: Mapping[str, str] = os.environ) -> None:
    """ValueError for a config this job cannot run where it runs: ``partner_dir`` on SageMaker (a folder on
    the machine that launched the job is not in the training container)."""
    on_sagemaker = bool(env.get("TRAINING_JOB_NAME") or env.get("SM_TRAINING_ENV"))
    if config.family == "combined" and config.combined.partner_dir and on_sagemaker:
        raise ValueError(
            f"partner_dir={config.combined.partner_dir}: a SageMaker job cannot read a model folder of the "
            "machine that launched it; on SageMaker the combined family trains its transformer (leave partner_dir "
            "out), or combine a finished transformer locally (docflow model combine)"
        )


@dataclass(frozen=True)
class JobPaths:
    train: Path
    validation: Path | None
    feedback: Path | None
    model: Path
    output: Path
    checkpoints: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> JobPaths:
        def channel(name: str) -> Path | None:
            explicit = env.get(f"SM_CHANNEL_{name.upper()}")
            if explicit and not Path(explicit).is_dir():
                raise ValueError(f"SM_CHANNEL_{name.upper()}={explicit} is not a directory")
            path = Path(explicit) if explicit else OPT_ML / "input" / "data" / name
            # A channel with no <class>/*.txt is no data set: the training state machine lays out every
            # channel on every run (SageMaker refuses an empty one), with only a manifest when it has none.
            return path if path.is_dir() and any(path.glob("*/*.txt")) else None

        train = env.get("SM_CHANNEL_TRAIN") or str(OPT_ML / "input" / "data" / "train")
        checkpoints = env.get("DOCFLOW_CHECKPOINT_DIR") or (
            str(OPT_ML / "checkpoints") if (OPT_ML / "checkpoints").is_dir() else None
        )
        return cls(
            train=Path(train),
            validation=channel("validation"),
            feedback=channel("feedback"),
            model=Path(env.get("SM_MODEL_DIR") or OPT_ML / "model"),
            output=Path(env.get("SM_OUTPUT_DATA_DIR") or OPT_ML / "output" / "data"),
            checkpoints=Path(checkpoints) if checkpoints else None,
        )


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" | "cpu"
    count: int
    names: tuple[str, ...]
    detected_by: str


def detect_device(env: Mapping[str, str] = os.environ, nvidia_smi: str | None = None) -> Device:
    """What accelerator the job has (torch is not installed: ``nvidia-smi``, then SageMaker's env)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return Device("cpu", 0, (), "CUDA_VISIBLE_DEVICES hides every GPU")
    smi = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
    if smi:
        try:
            done = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
            )
            names = tuple(line.strip() for line in done.stdout.splitlines() if line.strip())
            if done.returncode == 0 and names:
                return Device("cuda", len(names), names, "nvidia-smi")
        except (OSError, subprocess.SubprocessError) as exc:
            logger.info("nvidia-smi failed: %s", exc)
    gpus = env.get("SM_NUM_GPUS", "0")
    if gpus.isdigit() and int(gpus) > 0:
        return Device("cuda", int(gpus), (), "SM_NUM_GPUS")
    return Device("cpu", 0, (), "no nvidia-smi GPU")


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def assemble_corpus(train: Path, feedback: Path | None, work: Path) -> tuple[Path, int]:
    """The train channel, plus the feedback channel's documents filed under the train channel's
    folder for the same class (``News`` and ``news_article`` are one class: two folders for it would
    be refused). Links, not copies. Returns (corpus dir, feedback documents added)."""
    feedback_files = (
        [(folder, f) for folder in _class_folders(feedback) for f in sorted(folder.glob("*.txt"))] if feedback else []
    )
    if not feedback_files:
        return train, 0
    merged = work / "corpus"
    merged.mkdir(parents=True)
    folder_for: dict[str, str] = {}
    for folder in _class_folders(train):
        folder_for[canonical_class(folder.name)] = folder.name
        (merged / folder.name).mkdir()
        for path in folder.glob("*.txt"):
            (merged / folder.name / path.name).symlink_to(path.resolve())
    for folder, path in feedback_files:
        name = folder_for.setdefault(canonical_class(folder.name), folder.name)
        (merged / name).mkdir(exist_ok=True)
        (merged / name / f"feedback-{path.name}").symlink_to(path.resolve())
    logger.info("corpus: %s plus %d feedback documents", train, len(feedback_files))
    return merged, len(feedback_files)


def validation_source(channel: Path) -> str:
    """Where the validation channel's documents came from, for the record: what its HOLDOUT_SOURCE_FILE says
    (`docflow train` writes one in a channel it made from real scans), else "validation channel"."""
    try:
        described = json.loads((channel / HOLDOUT_SOURCE_FILE).read_text(encoding="utf-8")).get("holdout_source")
    except (OSError, ValueError, AttributeError):
        return "validation channel"
    return described.strip()[:1000] if isinstance(described, str) and described.strip() else "validation channel"


class _State:
    """Progress in the checkpoint directory, so a restarted (spot) job resumes instead of redoing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def save(self, **updates: Any) -> None:
        self.data.update(updates)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)


def run_job(config: JobConfig, paths: JobPaths, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    started = time.perf_counter()
    check_job_environment(config, env)
    device = detect_device(env)
    logger.info("device: %s (%s)", device.kind, device.detected_by)
    if not paths.train.is_dir():
        raise FileNotFoundError(f"train channel not found: {paths.train}")
    with tempfile.TemporaryDirectory(prefix="docflow-entry-") as scratch:
        work = paths.checkpoints or Path(scratch) / "work"
        work.mkdir(parents=True, exist_ok=True)
        state = _State(work / STATE_FILE)
        model_dir, gate_dir, plots_dir = work / "model", work / "gate", work / "plots"
        epoch_checkpoints = paths.checkpoints / "transformer" if paths.checkpoints else None

        if "trained" not in state.data:
            corpus, n_feedback = assemble_corpus(paths.train, paths.feedback, Path(scratch))
            fit_started = time.perf_counter()
            result = _fit(config, corpus, model_dir, epoch_checkpoints)
            fit_seconds = time.perf_counter() - fit_started
            holdout = load_corpus(paths.validation) if paths.validation else result.holdout_docs
            write_holdout(holdout, gate_dir / HOLDOUT_FILE)
            write_train_manifest(result.train_docs, gate_dir / TRAIN_MANIFEST_FILE)
            extra: dict[str, float] = {"job_fit_seconds": round(fit_seconds, 3)}
            if config.family == "combined":  # each member's scores on the held-out split, beside the combination's
                roles = {"primary": "linear", "partner": "transformer"}
                for role, scores_of in (result.metrics.get("members_on_holdout") or {}).items():
                    extra.update({f"{roles[role]}_holdout_{k}": float(v) for k, v in scores_of.items()})
            if paths.validation:
                scores = score_model(model_dir, read_holdout(gate_dir / HOLDOUT_FILE))
                extra.update(validation_accuracy=scores.accuracy, validation_macro_f1=scores.macro_f1)
                extra.update({f"validation_recall.{k}": v for k, v in scores.recall.items()})
            state.save(
                trained=True,
                n_feedback=n_feedback,
                n_holdout=len(holdout),
                holdout_source=validation_source(paths.validation)
                if paths.validation
                else "train_model's held-out split",
                extra_metrics=extra,
            )
            if epoch_checkpoints is not None:  # the model is recorded: no refit will need the epochs again
                shutil.rmtree(epoch_checkpoints, ignore_errors=True)
        else:
            logger.info("checkpoint: model already trained at %s; not refitting", model_dir)

        metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
        if metrics.get("confusion_matrix"):
            confusion_matrix_png(metrics["confusion_matrix"], plots_dir / "confusion_matrix.png")

        tracking = resolve_tracking(env=env)
        if "run_id" not in state.data:
            params = {
                "family": config.family,
                **_family_params(config, model_dir),
                **flat_params("gate.", config.gate.model_dump(mode="json")),
                "device": device.kind,
                "device.count": str(device.count),
                "device.names": ",".join(device.names) or "-",
                "device.detected_by": device.detected_by,
                "device.fit": metrics.get("device", "cpu"),  # see the module docstring
                "n_feedback": str(state.data["n_feedback"]),
                "holdout.source": state.data["holdout_source"],
                "holdout.n_documents": str(state.data["n_holdout"]),
                "corpus_uri": config.corpus_uri or str(paths.train),
            }
            job_name = env.get("TRAINING_JOB_NAME")
            logged = log_training_run(
                tracking,
                model_dir=model_dir,
                gate_dir=gate_dir,
                params=params,
                extra_metrics=state.data.get("extra_metrics"),
                plots_dir=plots_dir,
                tags={"docflow.job": f"sagemaker:{job_name}" if job_name else "local"},
                register_as=config.registered_model if config.register_version else None,
                run_name=config.run_name,
                corpus_uri=config.corpus_uri,
            )
            state.save(run_id=logged.run_id, version=logged.version, experiment_id=logged.experiment_id)

        version = state.data.get("version")
        decision: dict[str, Any] | None = state.data.get("decision")
        published = state.data.get("published")
        if version is not None and decision is None:
            registry = Registry(tracking, config.registered_model)
            gated = registry.gate(int(version), config.gate, move_alias=False)
            decision = gated.to_dict()
            state.save(decision=decision)
        # A promoted version's files are published first, then it gets the champion alias: a publish that
        # fails leaves the registry naming the model that still serves (and a retried job goes on from here).
        if version is not None and decision and decision["promoted"] and config.publish_to and not published:
            from docflow_training.publish import publish_version, target_from_uri

            pointer = publish_version(
                Registry(tracking, config.registered_model), int(version), target_from_uri(config.publish_to)
            )
            published = {"to": config.publish_to, "pointer": json.loads(pointer.model_dump_json())}
            state.save(published=published)
        if version is not None and decision and decision["promoted"] and not state.data.get("championed"):
            Registry(tracking, config.registered_model).make_champion(int(version), reason="gate")
            state.save(championed=True)

        paths.model.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, paths.model / name)
        paths.output.mkdir(parents=True, exist_ok=True)
        for png in plots_dir.glob("*.png"):
            shutil.copy2(png, paths.output / png.name)
        # The held-out set and training manifest travel with the job's output (output.tar.gz on SageMaker):
        # the AWS training loop's gate scores the model on them (docflow_training.loop).
        for name in (HOLDOUT_FILE, TRAIN_MANIFEST_FILE):
            shutil.copy2(gate_dir / name, paths.output / name)
        result_doc = {
            "run_id": state.data.get("run_id"),
            "experiment_id": state.data.get("experiment_id"),
            "tracking_uri": redact_uri(tracking.uri),  # the job's output is no place for a password
            "registered_model": config.registered_model if version is not None else None,
            "version": version,
            "decision": decision,
            "published": published,
            "device": asdict(device),
            "n_feedback": state.data.get("n_feedback"),
            "holdout_source": state.data.get("holdout_source"),
            "metrics": {
                k: metrics.get(k) for k in ("accuracy", "macro_f1", "n_train", "n_holdout", "training_seconds")
            },
            "model_selection": metrics.get("model_selection"),
            "job_seconds": round(time.perf_counter() - started, 2),
        }
        (paths.output / RESULT_FILE).write_text(json.dumps(result_doc, indent=2) + "\n", encoding="utf-8")
    return result_doc


def _family_params(config: JobConfig, model_dir: Path) -> dict[str, str]:
    """The MLflow params of the family's config: ``train.*`` (linear), ``transformer.*``, and for the combined
    family both (the transformer's as its partner_config.json says it was trained, also with partner_dir) and
    ``combined.*`` (partner_weight, partner_dir)."""
    if config.family == "transformer":
        return flat_params("transformer.", config.transformer.model_dump(mode="json"))
    linear = flat_params("train.", config.train.model_dump(mode="json"))
    if config.family != "combined":
        return linear
    partner = json.loads((model_dir / PARTNER_CONFIG_FILE).read_text(encoding="utf-8"))
    transformer = partner.get("train_config") or config.transformer.model_dump(mode="json")
    return {
        **linear,
        **flat_params("transformer.", transformer),
        **flat_params("combined.", config.combined.model_dump(mode="json")),
    }


@dataclass
class CombinedTrainingResult:
    """The combined family's fit: the combined model directory and its metrics, with the linear model's
    training and held-out documents (the transformer's held-out split is the same; it may train on fewer)."""

    model_dir: Path
    metrics: dict[str, Any]
    train_docs: list[Document]
    holdout_docs: list[Document]


def _fit(config: JobConfig, corpus: Path, model_dir: Path, epoch_checkpoints: Path | None = None) -> Any:
    """Train the job's model family; the result has ``train_docs``, ``holdout_docs`` and ``metrics`` whatever
    the family. The transformer (alone or in the combined family) checkpoints its epochs in
    ``epoch_checkpoints`` and resumes from them."""
    if config.family == "transformer":
        return _fit_transformer(config, corpus, model_dir, epoch_checkpoints)
    if config.family == "combined":
        return _fit_combined(config, corpus, model_dir, epoch_checkpoints)
    return run_training(corpus, model_dir, config.train, data_source=config.corpus_uri)


def _fit_transformer(config: JobConfig, corpus: Path, model_dir: Path, epoch_checkpoints: Path | None) -> Any:
    from docflow_training.transformer import run_transformer_training  # torch: only where a transformer trains

    def on_epoch(epoch: int, scores: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        logger.info("epoch %d: %s", epoch, shown)

    return run_transformer_training(
        corpus,
        model_dir,
        config.transformer,
        on_epoch=on_epoch,
        data_source=config.corpus_uri,
        checkpoint_dir=epoch_checkpoints,
    )


def check_partner(partner_dir: Path, corpus: Path, train: TrainConfig) -> dict[str, Any]:
    """The metrics.json of ``partner_dir`` (empty when it has none) once it is known to combine with a linear
    model trained on ``corpus`` with ``train``: a single transformer model trained on this corpus (same content)
    with the same seed and held-out fraction, so that its held-out split is the linear model's; else
    ``combine.CombineError`` in one line, before the linear model is trained."""
    from docflow_training.combine import load_member  # the ML runtime: only the combined family

    partner = load_member(partner_dir, "partner_dir")
    if partner.config.family != "transformer":
        raise CombineError(f"partner_dir {partner_dir} is a {partner.config.family} model, not a transformer")
    raw = json.loads((partner_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    data, trained = raw.get("training_data") or {}, raw.get("train_config") or {}
    digest = dataset_digest(corpus)
    if data.get("sha256") != digest.sha256:
        raise CombineError(
            f"partner_dir {partner_dir} was trained on other documents (sha256 {str(data.get('sha256'))[:12]}, "
            f"{data.get('n_documents')} documents) than this job's corpus ({digest.sha256[:12]}, "
            f"{digest.n_documents} documents, users' labels included): it may have trained on the documents the "
            "combination is judged on; train it on this corpus (--no-feedback: without users' labels), or leave "
            "partner_dir out"
        )
    if (trained.get("seed"), trained.get("holdout_fraction")) != (train.seed, train.holdout_fraction):
        raise CombineError(
            f"partner_dir {partner_dir} held out another split (seed {trained.get('seed')}, holdout_fraction "
            f"{trained.get('holdout_fraction')}) than this job's (seed {train.seed}, holdout_fraction "
            f"{train.holdout_fraction}): give the job the partner's seed and holdout_fraction"
        )
    metrics_file = partner_dir / METRICS_FILE
    partner_metrics: dict[str, Any] = (
        json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    )
    return partner_metrics


def _member_summary(metrics: Mapping[str, Any], source: str) -> dict[str, Any]:
    keys = ("model_version", "architecture", "accuracy", "macro_f1", "n_train", "n_holdout", "training_seconds")
    return {"source": source, **{k: metrics.get(k) for k in keys if k in metrics}}


def _fit_combined(
    config: JobConfig, corpus: Path, model_dir: Path, epoch_checkpoints: Path | None
) -> CombinedTrainingResult:
    """The linear model and the transformer (or ``partner_dir``'s) trained on ``corpus`` with one seed and
    held-out fraction, combined into ``model_dir`` (``combine_model_dirs``, the transformer the partner with
    ``partner_weight``) and scored on their shared held-out split; metrics.json is the combination's, with what
    the run page shows of the members added: the linear model's cross-validation (``model_selection``), the
    transformer's ``epochs`` and ``device``, and ``members`` (each one's own held-out scores and time)."""
    from docflow_training.combine import combine_model_dirs  # the ML runtime: only the combined family

    started = time.perf_counter()
    partner_dir = Path(config.combined.partner_dir).resolve() if config.combined.partner_dir else None
    # A partner that cannot be combined is refused before minutes of training, not after.
    partner_metrics = check_partner(partner_dir, corpus, config.train) if partner_dir else None
    with tempfile.TemporaryDirectory(prefix="docflow-members-") as members:
        linear: TrainingResult = run_training(
            corpus, Path(members) / "linear", config.train, data_source=config.corpus_uri
        )
        if partner_dir is None:
            transformer = _fit_transformer(config, corpus, Path(members) / "transformer", epoch_checkpoints)
            held_out = [doc.path for doc in linear.holdout_docs]
            if [doc.path for doc in transformer.holdout_docs] != held_out:
                raise RuntimeError(
                    "the linear model and the transformer held out different documents with seed "
                    f"{config.train.seed} and holdout_fraction {config.train.holdout_fraction}: they cannot be judged "
                    "as one model"
                )
            transformer_dir, transformer_metrics = transformer.model_dir, transformer.metrics
            transformer_source = "trained by this job"
        else:
            assert partner_metrics is not None
            transformer_dir, transformer_metrics = partner_dir, partner_metrics
            transformer_source = f"partner_dir {partner_dir}"
            logger.info("combining the transformer in %s (partner_dir): not training one", partner_dir)
        # The corpus, not the documents: combine reproduces the members' split from their configs and refuses
        # members that split it differently (a second check of the one above).
        metrics = combine_model_dirs(
            linear.model_dir, transformer_dir, config.combined.partner_weight, model_dir, holdout=corpus
        )
    metrics.update(
        {
            **{k: linear.metrics[k] for k in ("n_train", "train_support", "holdout_fraction", "seed", "dataset")},
            "model_selection": linear.metrics.get("model_selection"),  # the linear model's C by cross-validation
            "epochs": transformer_metrics.get("epochs") or [],  # the transformer's curves on the run page
            # Where this job fine-tuned the transformer (a partner_dir's was fine-tuned elsewhere: cpu, linear only)
            "device": transformer_metrics.get("device", "cpu") if partner_dir is None else "cpu",
            "members": {
                "linear": _member_summary(linear.metrics, "trained by this job"),
                "transformer": _member_summary(transformer_metrics, transformer_source),
            },
            "training_seconds": round(time.perf_counter() - started, 2),
        }
    )
    staged = model_dir / f".{METRICS_FILE}.tmp"
    staged.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    os.replace(staged, model_dir / METRICS_FILE)
    return CombinedTrainingResult(model_dir, metrics, list(linear.train_docs), list(linear.holdout_docs))


def _write_failure(paths: JobPaths | None, message: str) -> None:
    # SageMaker shows /opt/ml/output/failure as the job's FailureReason.
    output = paths.output.parent if paths else OPT_ML / "output"
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / "failure").write_text(message[:1024], encoding="utf-8")
    except OSError:
        pass


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    paths: JobPaths | None = None
    try:
        paths = JobPaths.from_env(env)
        config = job_config(parse_hyperparameters(sys.argv[1:] if argv is None else argv))
        check_job_environment(config, env)
    except (ValueError, ValidationError) as exc:
        _write_failure(paths, f"bad job configuration: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_job(config, paths, env)
    except CombineError as exc:  # a partner_dir that does not fit this run: one line, not a traceback
        _write_failure(paths, f"bad job configuration: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        _write_failure(paths, f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    promoted = (result["decision"] or {}).get("promoted")
    print(json.dumps({"run_id": result["run_id"], "version": result["version"], "promoted": promoted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
