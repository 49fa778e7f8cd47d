"""A model directory is written over an earlier model or into a new or empty folder, never over anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from docflow.settings import DEFAULT_MODEL_DIR
from docflow_training.model_dir import model_dir_target_problem

pytestmark = pytest.mark.unit


def test_a_new_an_empty_folder_and_an_earlier_model_may_be_replaced(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert model_dir_target_problem(tmp_path / "new") is None
    assert model_dir_target_problem(tmp_path / "empty") is None
    assert model_dir_target_problem(DEFAULT_MODEL_DIR) is None  # what `make model` replaces


def test_anything_else_is_refused_with_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    for name in ("mlflow.db", "docflow.sqlite3", "models"):
        (tmp_path / "home" / name).write_text("x")
    problem = model_dir_target_problem(tmp_path / "home")
    assert problem is not None and "(docflow.sqlite3, mlflow.db, models)" in problem
    (tmp_path / "home" / "config.json").write_text("{}")  # one of a model's files is not a model
    assert model_dir_target_problem(tmp_path / "home") is not None
    (tmp_path / "a-file").write_text("x")
    assert "is not a folder" in (model_dir_target_problem(tmp_path / "a-file") or "")
