"""MLflow tracking for the training job: where runs go, and what one run records.

The tracking URI comes from the environment (``MLFLOW_TRACKING_URI``): a SageMaker managed MLflow
tracking server's ARN on AWS (the ``sagemaker-mlflow`` plugin signs the requests), or by default
a SQLite file under DOCFLOW_HOME with the artifacts beside it::

    sqlite:///$DOCFLOW_HOME/mlflow.db      runs, metrics, the model registry
    $DOCFLOW_HOME/mlruns/                  artifacts (models, plots, held-out sets)

A run records: the training config and the detected device as params; the held-out metrics
(per class too); cross-validation accuracy per C value as a stepped metric (this model has no
epochs — a logistic regression is fitted once per C and fold, so "steps" are the grid's values);
the dataset's sha256 and size; the confusion matrix as a PNG; the held-out documents and a
manifest of the training documents (the promotion gate needs both); and the model through
``mlflow.onnx`` with the tokenizer, labels, config and metrics as extra files, so a registry
version alone is a complete, TextClassifier-loadable model directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from docflow.domain.model_files import MODEL_FILE, MODEL_FILES

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "docflow-classifier"
REGISTERED_MODEL = "docflow-classifier"
MODEL_ARTIFACT = "model"  # the mlflow.onnx model's name within the run
GATE_ARTIFACTS = "gate"  # run artifact folder: holdout.jsonl, train_manifest.json
HOLDOUT_FILE = "holdout.jsonl"
TRAIN_MANIFEST_FILE = "train_manifest.json"
# What serves the model (the Lambda's ML layer): declared, not inferred — inference loads the model
# in a subprocess and takes ~12 s per run.
RUNTIME_PACKAGES = ("onnxruntime", "tokenizers", "numpy")
# The optional files (metrics, drift baseline, scan head) are logged when the model has them.
EXTRA_MODEL_FILES = tuple(name for name in MODEL_FILES if name != MODEL_FILE)


@dataclass(frozen=True)
class Tracking:
    """Where runs go. ``artifact_location`` is set for a new experiment on a SQLite/file store only
    (a tracking server chooses its own)."""

    uri: str
    experiment: str = DEFAULT_EXPERIMENT
    artifact_location: str | None = None

    def __repr__(self) -> str:  # a Tracking in a log line must not carry the server's password
        return (
            f"Tracking(uri={redact_uri(self.uri)!r}, experiment={self.experiment!r}, "
            f"artifact_location={self.artifact_location!r})"
        )


def redact_uri(uri: str) -> str:
    """``uri`` fit to print or log: a password in its userinfo becomes ``***`` (http://alice:***@host/)."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # not a URL (an ARN, a bad port): nothing that looks like userinfo to keep
        return uri
    if not password:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redact_secrets(text: str, uri: str) -> str:
    """``text`` (an error message, a log line) with the password of ``uri`` replaced by ``***`` wherever it
    appears, as written in the URI or percent-decoded."""
    try:
        password = urlsplit(uri).password
    except ValueError:
        return text
    if not password:
        return text
    for secret in sorted({password, unquote(password)}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def default_home(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("DOCFLOW_HOME") or Path.home() / ".docflow")


def default_tracking_uri(home: Path) -> str:
    return f"sqlite:///{Path(home).resolve() / 'mlflow.db'}"


def resolve_tracking(home: Path | None = None, env: Mapping[str, str] = os.environ) -> Tracking:
    """MLFLOW_TRACKING_URI if set, else SQLite under ``home`` (default: DOCFLOW_HOME or ~/.docflow)."""
    uri = env.get("MLFLOW_TRACKING_URI") or default_tracking_uri(home or default_home(env))
    experiment = env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    artifact_location = None
    if uri.startswith("sqlite:///"):
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "mlruns").resolve().as_uri()
    return Tracking(uri=uri, experiment=experiment, artifact_location=artifact_location)


def tracking_env(tracking: Tracking) -> dict[str, str]:
    """The environment a training job needs to log where ``tracking`` points."""
    return {"MLFLOW_TRACKING_URI": tracking.uri, "MLFLOW_EXPERIMENT_NAME": tracking.experiment}


def connect(tracking: Tracking) -> tuple[MlflowClient, str]:
    """Point MLflow at ``tracking`` (tracking and registry) and return a client and the experiment id."""
    # Quiet, offline-friendly defaults; an explicit environment still wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    # "Creating initial MLflow database tables..." is MLflow's business, not a line for a user's terminal.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    # A warning on every request to an http server ("resolving request headers: list index out of range")
    # that says nothing about the request.
    logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)

    if tracking.uri.startswith("sqlite:///"):
        Path(tracking.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking.uri)
    mlflow.set_registry_uri(tracking.uri)
    client = MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is not None:
        return client, experiment.experiment_id
    try:
        return client, client.create_experiment(tracking.experiment, artifact_location=tracking.artifact_location)
    except Exception:
        # Two jobs starting together: the other one created it.
        experiment = client.get_experiment_by_name(tracking.experiment)
        if experiment is None:
            raise
        return client, experiment.experiment_id


def flat_params(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    """MLflow params are strings: nested mappings become dotted keys, sequences comma-joined."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = mlflow_name(f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(flat_params(f"{name}.", value))
        elif isinstance(value, list | tuple):
            out[name] = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        else:
            out[name] = str(value)
    return out


# What MLflow accepts in a metric or param name; anything else (a class folder "Email & Fax") becomes "_".
_NOT_IN_A_NAME = re.compile(r"[^\w\-. :/]")


def mlflow_name(name: str) -> str:
    return _NOT_IN_A_NAME.sub("_", name)


def holdout_metrics(metrics: Mapping[str, Any], prefix: str = "holdout_") -> dict[str, float]:
    """The scalar held-out metrics and the per-class ones, as MLflow metric names."""
    out = {
        f"{prefix}{key}": float(metrics[key])
        for key in ("accuracy", "macro_f1", "weighted_f1", "log_loss")
        if isinstance(metrics.get(key), int | float)
    }
    for label, row in (metrics.get("per_class") or {}).items():
        for key in ("precision", "recall", "f1"):
            if key in row:
                out[mlflow_name(f"{prefix}{key}.{label}")] = float(row[key])
    return out


def confusion_matrix_png(confusion: Mapping[str, Any], path: Path, title: str = "held-out confusion matrix") -> Path:
    """Rows = true class, columns = predicted class, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a job, a container, or CI
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(confusion["labels"])
    matrix = np.asarray(confusion["matrix"], dtype=int)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    try:
        image = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                color = "white" if matrix[i, j] > threshold else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color, fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def runtime_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_uri: str
    version: int | None  # registry version; None when not registered


def log_training_run(
    tracking: Tracking,
    *,
    model_dir: Path,
    gate_dir: Path,
    params: Mapping[str, str],
    extra_metrics: Mapping[str, float] | None = None,
    plots_dir: Path,
    tags: Mapping[str, str] | None = None,
    register_as: str | None = REGISTERED_MODEL,
    run_name: str | None = None,
    corpus_uri: str | None = None,
) -> LoggedRun:
    """One MLflow run for a trained model directory (``metrics.json`` inside it is the evaluation)."""
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    client, experiment_id = connect(tracking)
    metrics: dict[str, Any] = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    config: dict[str, Any] = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    dataset = metrics.get("dataset") or config.get("training_data") or {}

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})) as run:
        mlflow.log_params(dict(params))
        mlflow.log_params(
            {
                "dataset.sha256": str(dataset.get("sha256")),
                "dataset.n_documents": str(dataset.get("n_documents")),
                "dataset.n_bytes": str(dataset.get("n_bytes")),
                "n_train": str(metrics.get("n_train")),
                "n_holdout": str(metrics.get("n_holdout")),
                "content_version": str(config.get("version")),
                "architecture": str(config.get("architecture")),
            }
        )
        # The corpus is read by path: MLflow keeps where it was and its digest (the registry's digest
        # column holds 36 characters; the full sha256 is the dataset.sha256 param), not a copy.
        with warnings.catch_warnings():
            # MLflow registers two equivalent sources for local paths and warns about the ambiguity.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(corpus_uri or str(config.get("training_data", {}).get("path", ".")))
        # MLflow documents MetaDataset for datasets logged by reference; its base marks `profile` abstract
        # without ABCMeta, so only mypy objects.
        corpus = MetaDataset(  # type: ignore[abstract]
            source=source,
            name="corpus",
            digest=str(dataset.get("sha256", ""))[:36] or None,
        )
        mlflow.log_input(corpus, context="training")

        selection = metrics.get("model_selection") or {}
        for step, (c, accuracy) in enumerate(
            sorted(((float(c), float(a)) for c, a in (selection.get("cv_accuracy_by_c") or {}).items()))
        ):
            mlflow.log_metric("cv_accuracy", accuracy, step=step)
            mlflow.log_metric("cv_c", c, step=step)
        # A model trained in epochs (the transformer family): one point per epoch, so the run page draws the
        # curves (train loss, held-out and validation scores).
        for row in metrics.get("epochs") or []:
            step = int(row.get("epoch", 0))
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    mlflow.log_metric(f"epoch_{key}", float(value), step=step)
        scalar = holdout_metrics(metrics)
        noised = metrics.get("holdout_ocr_noise") or {}
        scalar.update({k: v for k, v in holdout_metrics(noised, "holdout_ocr_noise_").items() if "." not in k})
        for key in ("best_c",):
            if isinstance(selection.get(key), int | float):
                scalar[key] = float(selection[key])
        for key in ("training_seconds", "onnx_max_abs_diff"):
            if isinstance(metrics.get(key), int | float):
                scalar[key] = float(metrics[key])
        served_threshold = (metrics.get("review_threshold") or {}).get("threshold")
        if isinstance(served_threshold, int | float):
            scalar["review_threshold"] = float(served_threshold)
        scalar.update(extra_metrics or {})
        mlflow.log_metrics({mlflow_name(name): value for name, value in scalar.items()})

        report = {"per_class": metrics.get("per_class"), "confusion_matrix": metrics.get("confusion_matrix")}
        mlflow.log_dict(report, "per_class_report.json")
        if metrics.get("confusion_matrix") and not (plots_dir / "confusion_matrix.png").is_file():
            confusion_matrix_png(metrics["confusion_matrix"], plots_dir / "confusion_matrix.png")
        for png in sorted(plots_dir.glob("*.png")):
            mlflow.log_artifact(str(png))
        mlflow.log_artifacts(str(gate_dir), GATE_ARTIFACTS)

        info = mlflow.onnx.log_model(
            onnx.load(str(model_dir / "model.onnx")),
            name=MODEL_ARTIFACT,
            save_as_external_data=False,  # one model.onnx, byte for byte what training wrote
            extra_files=[str(model_dir / name) for name in EXTRA_MODEL_FILES if (model_dir / name).is_file()],
            pip_requirements=runtime_requirements(),
            registered_model_name=register_as,
            metadata={"content_version": str(config.get("version"))},
        )
    version = int(info.registered_model_version) if info.registered_model_version is not None else None
    if version is not None and register_as:
        for key, value in {
            "content_version": str(config.get("version")),
            "dataset.sha256": str(dataset.get("sha256")),
            "dataset.n_documents": str(dataset.get("n_documents")),
        }.items():
            client.set_model_version_tag(register_as, str(version), key, value)
    logger.info("mlflow run %s logged (experiment %s), registered version %s", run.info.run_id, experiment_id, version)
    return LoggedRun(run.info.run_id, experiment_id, info.model_uri, version)
