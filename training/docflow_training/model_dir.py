"""Where a model directory may be written (never over anything but an earlier model), and how: written in
a folder beside its target, then put in its place whole (``staged_model_dir``), so that a reader never sees
half a model. Training, combining, copying a job's model out and publishing all write model folders this way.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def staged_model_dir(target: Path) -> Iterator[Path]:
    """An empty folder beside ``target`` to write a model directory into. When the block ends, the folder
    replaces ``target`` whole (``replace_dir``); when the block raises, the folder is deleted and ``target``
    is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, replacing any previous model directory there.

    A rename is atomic, but POSIX cannot rename a directory over a non-empty one: the old directory
    is first renamed aside, so a reader sees the old model, briefly nothing, then the new one —
    never a half-written mix. The old one is deleted only once it is aside (a process may still read it).
    """
    if not target.exists():
        os.replace(staging, target)
        return
    problem = model_dir_target_problem(target)
    if problem:
        raise FileExistsError(problem)
    retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
