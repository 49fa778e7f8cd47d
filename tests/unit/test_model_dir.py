"""A model directory is written over an earlier model or into a new or empty folder, never over anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from docflow.settings import DEFAULT_MODEL_DIR
from docflow_training.model_dir import model_dir_target_problem, staged_model_dir

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


def _model(folder: Path, version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(version)
    (folder / "model.onnx").write_text(version)


def test_a_staged_model_replaces_the_earlier_one_whole(tmp_path: Path) -> None:
    target = tmp_path / "models" / "v1"
    _model(target, "old")
    (target / "scan_head.json").write_text("old")  # the new model has none: nothing of the old one stays
    with staged_model_dir(target) as staging:
        assert staging.parent == target.parent and not any(staging.iterdir())
        _model(staging, "new")
        assert (target / "config.json").read_text() == "old"  # a reader still sees the old model meanwhile
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.onnx"]
    assert (target / "config.json").read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["v1"], "a staging or retired folder is left"


def test_a_failed_write_leaves_the_earlier_model_and_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    _model(target, "old")
    with pytest.raises(RuntimeError), staged_model_dir(target) as staging:
        _model(staging, "half")
        raise RuntimeError("the export failed")
    assert (target / "config.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_a_staged_model_is_never_put_over_other_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "docflow.sqlite3").write_text("records")
    with pytest.raises(FileExistsError, match="is not a model directory"), staged_model_dir(home) as staging:
        _model(staging, "new")
    assert [p.name for p in home.iterdir()] == ["docflow.sqlite3"]
    assert [p.name for p in tmp_path.iterdir()] == ["home"]
