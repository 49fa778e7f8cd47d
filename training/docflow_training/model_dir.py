"""Where a model directory may be written: never over anything but an earlier model."""

from __future__ import annotations

from pathlib import Path

# The files that make a folder a model directory: one holding both is replaced whole by a new model.
MODEL_DIR_MARKERS = ("config.json", "model.onnx")


def model_dir_target_problem(target: Path) -> str | None:
    """Why a model directory must not be written to ``target`` (None when it may): a model replaces an
    earlier model (a folder holding config.json and model.onnx, replaced whole), or fills a missing or
    empty folder, and never deletes anything else (``--out`` naming a folder of other files, DOCFLOW_HOME,
    the current directory)."""
    target = Path(target)
    if not target.exists():
        return None
    if not target.is_dir():
        return f"{target} exists and is not a folder"
    if all((target / name).is_file() for name in MODEL_DIR_MARKERS):
        return None
    others = sorted(p.name for p in target.iterdir())
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return (
            f"{target} holds files and is not a model directory ({shown}); a model is written only to a new "
            "or empty folder or over an earlier model, so that nothing else is deleted"
        )
    return None
