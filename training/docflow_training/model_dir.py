"""Where a model directory may be written: never over anything but an earlier model."""

from __future__ import annotations

from pathlib import Path

# What a model directory holds (the runtime's files, metrics.json, the drift baseline), and nothing else.
MODEL_DIR_FILES = frozenset(
    {"model.onnx", "tokenizer.json", "labels.json", "config.json", "metrics.json", "baseline.json"}
)


def model_dir_target_problem(target: Path) -> str | None:
    """Why a model directory must not be written to ``target`` (None when it may): a model replaces an
    earlier model, or fills a missing or empty folder, and never deletes anything else (``--out`` named
    a folder of other files, DOCFLOW_HOME, the current directory)."""
    target = Path(target)
    if not target.exists():
        return None
    if not target.is_dir():
        return f"{target} exists and is not a folder"
    others = sorted(p.name for p in target.iterdir() if p.name not in MODEL_DIR_FILES)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return (
            f"{target} holds files that are not a model's ({shown}); a model is written only to a new or "
            "empty folder or over an earlier model, so that nothing else is deleted"
        )
    return None
