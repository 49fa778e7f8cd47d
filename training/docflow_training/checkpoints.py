"""Epoch checkpoints for the transformer family, so an interrupted fine-tuning (a managed-spot job stopped
mid-run) resumes from its last finished epoch instead of starting over.

One file per checkpoint directory, the latest finished epoch's (``CHECKPOINT_FILE``), written to a fixed
temporary name and moved over the old one with ``os.replace``: a job stopped while writing leaves the
previous checkpoint whole. It holds the model's, optimizer's, learning-rate schedule's and GradScaler's
state, the epoch and the history rows so far, and torch's RNG state: dropout draws from torch's global
generator, so the next epoch's dropout masks depend on every draw before them. Nothing else needs saving:
the OCR noise (``transformer.training_text``) and the batch order are seeded by (seed, epoch) alone.

With it goes a fingerprint of what the checkpoint was trained for (the config fields fine-tuning reads,
the labels, the served encoding, the device, the base model's version, and hashes of the training and
held-out documents): a checkpoint whose fingerprint differs was written by another run and is ignored,
with a log line, rather than resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from docflow.domain.encoding import ModelConfig
from docflow_training.data import Document
from docflow_training.families import TransformerConfig

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "fine-tune.pt"
_PARTIAL_FILE = CHECKPOINT_FILE + ".partial"  # a fixed name: a checkpoint synced to S3 leaves no litter
FORMAT = 1
# Read only after fine-tuning (export, int8 check, calibration, naming): changing them changes no weight.
_AFTER_TRAINING = frozenset(
    {"parity_docs", "min_int8_agreement", "model_name", "version", "review_target_precision", "review_confidence"}
)


def _documents_digest(docs: Sequence[Document]) -> str:
    digest = hashlib.sha256()
    for doc in docs:  # in order: the order is the targets' and the batches' indexing
        text = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
        digest.update(json.dumps([doc.path, doc.label, text]).encode("utf-8") + b"\n")
    return digest.hexdigest()


def run_fingerprint(
    config: TransformerConfig,
    labels: Sequence[str],
    served: ModelConfig,
    train_docs: Sequence[Document],
    holdout_docs: Sequence[Document],
    device: str,
    autocast: str,
    base_model: str | None,
) -> dict[str, Any]:
    """What a fine-tuning run's checkpoints were trained for: two runs with the same fingerprint train the same
    epochs the same way."""
    return {
        "format": FORMAT,
        "config": {k: v for k, v in config.model_dump(mode="json").items() if k not in _AFTER_TRAINING},
        "labels": list(labels),
        "encoding": served.model_dump(mode="json", exclude={"name", "version"}),
        "device": device,
        "autocast": autocast,
        "base_model": base_model,
        "train_docs": {"n": len(train_docs), "sha256": _documents_digest(train_docs)},
        "holdout_docs": {"n": len(holdout_docs), "sha256": _documents_digest(holdout_docs)},
    }


@dataclass
class Checkpoint:
    epoch: int  # the last finished epoch (1-based)
    history: list[dict[str, float]]  # its rows and those of the epochs before it
    state: dict[str, Any]  # the torch states: model, optimizer, schedule, scaler, rng


def _rng_state(device: str) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(
    directory: Path,
    fingerprint: dict[str, Any],
    epoch: int,
    history: Sequence[dict[str, float]],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: str,
) -> Path:
    """Write epoch ``epoch``'s checkpoint over the directory's previous one, atomically; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
        "epoch": epoch,
        "history": [dict(row) for row in history],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(device),
    }
    partial, path = directory / _PARTIAL_FILE, directory / CHECKPOINT_FILE
    torch.save(payload, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(directory: Path, fingerprint: dict[str, Any]) -> Checkpoint | None:
    """The directory's checkpoint if it was trained for ``fingerprint``; None (and a log line saying why)
    when there is none, it cannot be read, or another run wrote it."""
    (directory / _PARTIAL_FILE).unlink(missing_ok=True)  # a write that was cut off
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(payload["fingerprint"])
        epoch, history = int(payload["epoch"]), list(payload["history"])
    except Exception as exc:  # a damaged file must not stop the job: training from the start is always right
        logger.warning("ignoring checkpoint %s: unreadable (%s: %s)", path, type(exc).__name__, exc)
        return None
    if saved != fingerprint:
        differ = sorted(k for k in {*saved, *fingerprint} if saved.get(k) != fingerprint.get(k))
        logger.warning(
            "ignoring checkpoint %s (epoch %d): written by another run (differs in %s); training from the start",
            path,
            epoch,
            ", ".join(differ),
        )
        return None
    return Checkpoint(epoch, history, payload)


def restore(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: str,
) -> None:
    """Put the checkpoint's states into freshly built training objects (the model already on ``device``) and
    torch's RNG where the uninterrupted run's would be after that epoch."""
    state = checkpoint.state
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if device == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
