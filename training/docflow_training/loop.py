"""The AWS training loop's steps, as the training state machine runs them (infra_cdk/constructs/training.py):

    PrepareData  ->  SageMaker createTrainingJob.sync  ->  EvaluateAndGate  ->  Promoted? -> Publish

Everything lives in the model bucket (a BlobStore; these functions never see boto3)::

    training/corpus/<class>/*.txt                    the labelled corpus (the train channel)
    training/validation/<class>/*.txt                optional external held-out set (the validation channel)
    training/jobs/<job>/feedback/<label>/<doc>.txt   users' labels laid out for one job (+ manifest.json)
    training/jobs/<job>/validation/manifest.json     stands in for an absent validation set
    training/jobs/<job>/output/model.tar.gz          what SageMaker writes: the model directory …
    training/jobs/<job>/output/output.tar.gz         … and holdout.jsonl, train_manifest.json, result.json
    models/docflow-classifier/v{N}/decision.json     the gate's decision on candidate N, promoted or not
    models/docflow-classifier/v{N}/…, models/champion.json   a published candidate (publish.py)

Every channel always exists: SageMaker refuses an empty one, and the entry point treats a channel with
no ``<class>/*.txt`` as absent. The gate is the registry's (``compare_on_holdout``): the candidate and
the champion scored on the candidate's held-out documents minus those the champion trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import tarfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from docflow.errors import ConfigurationError, PermanentError
from docflow.model_source import BUCKET_PREFIX, POINTER_FILE, BlobChampionSource, parse_pointer
from docflow.ports import BlobNotFoundError, BlobStore, RecordStore
from docflow_training.feedback import collect_feedback, feedback_path
from docflow_training.publish import BlobPublishTarget, publish_dir
from docflow_training.registry import GateDecision, GatePolicy, compare_on_holdout, read_holdout, read_train_manifest
from docflow_training.tracking import HOLDOUT_FILE, REGISTERED_MODEL, TRAIN_MANIFEST_FILE

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DECISION_FILE = "decision.json"
RESULT_FILE = "result.json"
CHANNELS = ("train", "validation", "feedback")
_JOB_NAME = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}")


class LoopSettings(BaseSettings):
    """Where the loop's data lives in the model bucket, and the gate's policy; each field also reads
    DOCFLOW_TRAINING_<NAME> (the training functions' environment, set by the CDK construct)."""

    model_config = SettingsConfigDict(
        env_prefix="DOCFLOW_TRAINING_", frozen=True, extra="ignore", env_ignore_empty=True
    )

    corpus_prefix: str = "training/corpus/"
    validation_prefix: str = "training/validation/"
    jobs_prefix: str = "training/jobs/"
    models_prefix: str = BUCKET_PREFIX
    registered_model: str = REGISTERED_MODEL
    min_macro_f1_gain: float = Field(default=0.0, ge=-1.0, le=1.0)
    max_recall_drop: float = Field(default=0.05, ge=0.0, le=1.0)
    min_eval_docs: int = Field(default=GatePolicy.model_fields["min_eval_docs"].default, ge=1)

    @property
    def policy(self) -> GatePolicy:
        return GatePolicy(
            min_macro_f1_gain=self.min_macro_f1_gain,
            max_recall_drop=self.max_recall_drop,
            min_eval_docs=self.min_eval_docs,
        )

    def version_prefix(self, version: int) -> str:
        return f"{self.models_prefix}{self.registered_model}/v{version}/"


class PrepareRequest(BaseModel):
    """PrepareData's input: what started the execution (a schedule, the labels event, a person) and the
    execution's name (unique per state machine: the job's name derives from it)."""

    model_config = ConfigDict(extra="forbid")

    execution_name: str = Field(min_length=1)
    started_at: datetime
    request: dict[str, Any] = Field(default_factory=dict)


class PreparedJob(BaseModel):
    """PrepareData's output, the next states' input: the job's name and its channels' S3 URIs."""

    job_name: str
    trigger: str
    channels: dict[str, str]
    output_path: str  # where SageMaker writes <job>/output/model.tar.gz and output.tar.gz
    corpus: dict[str, int]  # corpus documents per class folder
    external_validation: bool
    n_feedback: int
    feedback_by_label: dict[str, int] = Field(default_factory=dict)
    feedback_skipped: dict[str, int] = Field(default_factory=dict)


class TrainingJob(BaseModel):
    """What the SageMaker task leaves in the state (selected from DescribeTrainingJob)."""

    job_name: str
    model_artifacts: str  # s3://…/training/jobs/<job>/output/model.tar.gz
    status: str = "Completed"


class GateOutcome(BaseModel):
    version: int
    promoted: bool
    summary: str
    reasons: list[str]
    champion_version: int | None
    decision_uri: str


class LoopState(BaseModel):
    """The state the last two steps receive: PrepareData's output plus the training job and the decision."""

    model_config = ConfigDict(extra="ignore")

    prepared: PreparedJob
    training: TrainingJob
    decision: GateOutcome | None = None


def job_name_for(execution_name: str, started_at: datetime) -> str:
    """A SageMaker job name (63 characters of [A-Za-z0-9-]), unique per execution, sortable by time."""
    digest = hashlib.sha256(execution_name.encode()).hexdigest()[:8]
    name = f"docflow-train-{started_at.astimezone(UTC):%Y%m%d-%H%M%S}-{digest}"
    assert _JOB_NAME.fullmatch(name), name
    return name


def _trigger(request: dict[str, Any]) -> str:
    value = request.get("trigger") or request.get("detail-type") or "manual"
    return str(value)[:100]


def _put_json(blobs: BlobStore, key: str, value: Any) -> None:
    blobs.put(key, (json.dumps(value, indent=2, default=str) + "\n").encode(), "application/json")


def _documents_by_class(blobs: BlobStore, prefix: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for key in blobs.list(prefix):
        parts = PurePosixPath(key[len(prefix) :]).parts
        if len(parts) == 2 and parts[1].endswith(".txt") and not parts[0].startswith("."):
            counts[parts[0]] += 1
    return dict(sorted(counts.items()))


def prepare_training_data(
    request: PrepareRequest,
    *,
    records: RecordStore,
    documents: BlobStore,
    models: BlobStore,
    bucket: str,
    settings: LoopSettings,
) -> PreparedJob:
    """Lay out the job's channels in the model bucket: the corpus as it is, the external validation set if
    there is one (else a manifest saying there is none), and the users' labels (DocumentRecord.label with
    the extracted text) as ``<label>/<document_id>.txt``. Refuses before a GPU is paid for when the corpus
    could not train a model."""
    job = job_name_for(request.execution_name, request.started_at)
    uri = f"s3://{bucket}/"
    corpus = _documents_by_class(models, settings.corpus_prefix)
    if len(corpus) < 2:
        raise PermanentError(
            f"the training corpus {uri}{settings.corpus_prefix} has {sum(corpus.values())} documents in "
            f"{len(corpus)} class folders; at least two classes are needed: upload a folder per class of .txt "
            f"files (aws s3 sync <corpus> {uri}{settings.corpus_prefix})"
        )
    job_prefix = f"{settings.jobs_prefix}{job}/"

    validation = _documents_by_class(models, settings.validation_prefix)
    if validation:
        validation_uri = f"{uri}{settings.validation_prefix}"
    else:
        _put_json(models, f"{job_prefix}validation/{MANIFEST}", {"external_validation": False})
        validation_uri = f"{uri}{job_prefix}validation/"

    feedback = collect_feedback(records, documents)
    for example in [*feedback.examples, *feedback.out_of_scope]:
        key = f"{job_prefix}feedback/{feedback_path(example)}"
        models.put(key, example.text.encode("utf-8"), "text/plain; charset=utf-8")
    _put_json(
        models,
        f"{job_prefix}feedback/{MANIFEST}",
        {
            "n_feedback": len(feedback.examples),
            "by_label": feedback.by_label(),
            "n_out_of_scope": len(feedback.out_of_scope),
            "skipped": dict(feedback.skipped),
        },
    )
    prepared = PreparedJob(
        job_name=job,
        trigger=_trigger(request.request),
        channels={
            "train": f"{uri}{settings.corpus_prefix}",
            "validation": validation_uri,
            "feedback": f"{uri}{job_prefix}feedback/",
        },
        output_path=f"{uri}{settings.jobs_prefix}".rstrip("/"),
        corpus=corpus,
        external_validation=bool(validation),
        n_feedback=len(feedback.examples),
        feedback_by_label=feedback.by_label(),
        feedback_skipped=dict(feedback.skipped),
    )
    logger.info(
        "prepared %s: corpus %s, validation %s, %d feedback documents",
        job,
        corpus,
        "external" if validation else "the job's own split",
        prepared.n_feedback,
    )
    return prepared


def _key_in(uri: str, bucket: str) -> str:
    prefix = f"s3://{bucket}/"
    if not uri.startswith(prefix):
        raise ConfigurationError(f"{uri} is not in the model bucket {prefix}")
    return uri[len(prefix) :]


def _extract(blobs: BlobStore, key: str, dst: Path) -> Path:
    """A SageMaker tarball into ``dst`` (tarfile's "data" filter: no links out, no absolute paths)."""
    try:
        raw = blobs.get(key)
    except BlobNotFoundError:
        raise PermanentError(f"the training job left no {key} in the model bucket") from None
    dst.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        tar.extractall(dst, filter="data")
    return dst


def _output_key(model_key: str) -> str:
    """SageMaker writes output.tar.gz beside model.tar.gz (<output path>/<job>/output/)."""
    return str(PurePosixPath(model_key).with_name("output.tar.gz"))


def next_version(models: BlobStore, settings: LoopSettings) -> int:
    """One more than any version in the bucket (published or only decided), or than the champion's."""
    root = f"{settings.models_prefix}{settings.registered_model}/"
    versions = [0]
    for key in models.list(root):
        match = re.match(r"v(\d+)/", key[len(root) :])
        if match:
            versions.append(int(match.group(1)))
    with contextlib.suppress(BlobNotFoundError):
        versions.append(parse_pointer(models.get(f"{settings.models_prefix}{POINTER_FILE}"), "champion.json").version)
    return max(versions) + 1


def decided_version(models: BlobStore, settings: LoopSettings, job_name: str) -> int | None:
    """The version a decision was already recorded under for this training job, if any."""
    root = f"{settings.models_prefix}{settings.registered_model}/"
    for key in models.list(root):
        match = re.fullmatch(rf"v(\d+)/{re.escape(DECISION_FILE)}", key[len(root) :])
        if match and json.loads(models.get(key)).get("job_name") == job_name:
            return int(match.group(1))
    return None


def evaluate_and_gate(
    state: LoopState, *, models: BlobStore, bucket: str, settings: LoopSettings, work: Path
) -> GateOutcome:
    """Score the job's model against the published champion on the same held-out documents, with the
    registry's gate, and record the decision as ``v{N}/decision.json`` (N: the candidate's new version)."""
    model_key = _key_in(state.training.model_artifacts, bucket)
    candidate = _extract(models, model_key, work / "candidate")
    output = _extract(models, _output_key(model_key), work / "output")
    if not (output / HOLDOUT_FILE).is_file():
        raise PermanentError(f"the training job's output has no {HOLDOUT_FILE}: nothing to gate on")
    holdout = read_holdout(output / HOLDOUT_FILE)
    # A retried gate (its first run wrote the decision, then the Lambda reply was lost) decides the same job
    # again under the same version: never a second, orphaned version for one job.
    version = decided_version(models, settings, state.training.job_name) or next_version(models, settings)
    policy = settings.policy

    pointer_key = f"{settings.models_prefix}{POINTER_FILE}"
    try:
        pointer = parse_pointer(models.get(pointer_key), f"s3://{bucket}/{pointer_key}")
    except BlobNotFoundError:
        pointer = None
    if pointer is None:
        decision = GateDecision(version, True, "no champion yet: the first model is promoted", policy=policy)
    else:
        source = BlobChampionSource(models, settings.models_prefix, cache_root=work / "champion", ttl_seconds=0)
        trained_on: set[str] | None
        try:
            raw = models.get(f"{settings.models_prefix}{pointer.model_dir}/{TRAIN_MANIFEST_FILE}")
            trained_on = set(json.loads(raw)["text_sha256"])
        except BlobNotFoundError:
            trained_on = None  # published by `docflow train` from the MLflow registry: its manifest stays there
        decision = compare_on_holdout(
            version,
            lambda: candidate,
            pointer.version,
            source.resolve,
            holdout,
            trained_on,
            policy,
        )
    record = {
        **decision.to_dict(),
        "job_name": state.training.job_name,
        "model_artifacts": state.training.model_artifacts,
        "trigger": state.prepared.trigger,
        "n_feedback": state.prepared.n_feedback,
        "holdout_documents": len(holdout),
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    decision_key = f"{settings.version_prefix(version)}{DECISION_FILE}"
    _put_json(models, decision_key, record)
    logger.info(
        "gate: candidate v%d from %s %s: %s%s",
        version,
        state.training.job_name,
        "PROMOTED" if decision.promoted else "REFUSED",
        decision.summary,
        "".join(f"\n  - {r}" for r in decision.reasons),
    )
    return GateOutcome(
        version=version,
        promoted=decision.promoted,
        summary=decision.summary,
        reasons=decision.reasons,
        champion_version=decision.champion_version,
        decision_uri=f"s3://{bucket}/{decision_key}",
    )


def publish_candidate(
    state: LoopState, *, models: BlobStore, bucket: str, settings: LoopSettings, work: Path
) -> dict[str, Any]:
    """Publish the promoted candidate: its files under ``v{N}/``, its training manifest beside them (the
    next gate leaves out what it trained on), then champion.json (publish.py: files first, pointer last)."""
    if state.decision is None or not state.decision.promoted:
        raise PermanentError("publish called for a candidate the gate did not promote")
    version = state.decision.version
    model_key = _key_in(state.training.model_artifacts, bucket)
    model_dir = _extract(models, model_key, work / "model")
    output = _extract(models, _output_key(model_key), work / "output")
    manifest = output / TRAIN_MANIFEST_FILE
    if manifest.is_file():
        read_train_manifest(manifest)  # readable, or fail before anything is published
        models.put(
            f"{settings.version_prefix(version)}{TRAIN_MANIFEST_FILE}", manifest.read_bytes(), "application/json"
        )
    run_id = None
    if (output / RESULT_FILE).is_file():
        result = json.loads((output / RESULT_FILE).read_text(encoding="utf-8"))
        # Only a run on a managed MLflow server outlives the job; a SQLite store in the container does not.
        if str(result.get("tracking_uri") or "").startswith("arn:"):
            run_id = result.get("run_id")
    pointer = publish_dir(
        model_dir, settings.registered_model, version, run_id, BlobPublishTarget(models, settings.models_prefix)
    )
    return {
        "version": version,
        "champion": f"s3://{bucket}/{settings.models_prefix}{POINTER_FILE}",
        "model_dir": f"s3://{bucket}/{settings.models_prefix}{pointer.model_dir}/",
        "files": sorted(pointer.files),
    }
