"""A newly published champion that does not load must not stop classification: the context keeps serving the
model in use, does not retry the broken one on every document, and moves on when the pointer changes."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from docflow.context import build_context
from docflow.domain.classifier import load_classifier
from docflow.settings import DEFAULT_MODEL_DIR, Settings

pytestmark = pytest.mark.integration


def _publish(home: Path, version: int, *, broken: bool = False) -> Path:
    target = home / "models" / "docflow-classifier" / f"v{version}"
    shutil.copytree(DEFAULT_MODEL_DIR, target)
    if broken:
        (target / "model.onnx").write_bytes(b"not an onnx graph")
    pointer = {"model_dir": f"docflow-classifier/v{version}", "version": version}
    (home / "models" / "champion.json").write_text(json.dumps(pointer))
    return target


def test_a_champion_that_does_not_load_leaves_the_one_in_use(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_classifier.cache_clear()
    home = tmp_path / "home"
    ctx = build_context(Settings(home=home, model_refresh_seconds=0))  # the pointer is read on every call
    v1 = _publish(home, 1)
    serving = ctx.classifier()
    assert serving.model_dir == v1

    _publish(home, 2, broken=True)
    with caplog.at_level(logging.ERROR):
        assert ctx.classifier() is serving
    assert "does not load; still serving" in caplog.text
    misses = load_classifier.cache_info().misses
    assert ctx.classifier() is serving and load_classifier.cache_info().misses == misses  # not retried

    v3 = _publish(home, 3)
    assert ctx.classifier().model_dir == v3


def test_without_a_model_in_use_a_champion_that_does_not_load_is_an_error(tmp_path: Path) -> None:
    load_classifier.cache_clear()
    home = tmp_path / "home"
    _publish(home, 1, broken=True)
    with pytest.raises(Exception):  # noqa: B017 - whatever onnxruntime raises: there is nothing to serve
        build_context(Settings(home=home, model_refresh_seconds=0)).classifier()
