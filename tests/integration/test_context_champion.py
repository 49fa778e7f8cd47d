"""A newly published champion that does not load must not stop classification: the context keeps serving the
model in use, does not retry the broken one on every document, and moves on when the pointer changes."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from docflow.context import build_context
from docflow.domain.classifier import classifier_cache_info, clear_classifier_cache
from docflow.settings import DEFAULT_MODEL_DIR, Settings

pytestmark = pytest.mark.integration


def _publish(home: Path, version: int, *, broken: bool = False, review_threshold: float | None = None) -> Path:
    """Files first, then the pointer, the way LocalPublishTarget does it: a version published again
    replaces its folder as a whole (never edits it in place)."""
    target = home / "models" / "docflow-classifier" / f"v{version}"
    staging = target.with_name(f".v{version}.staging")
    shutil.copytree(DEFAULT_MODEL_DIR, staging)
    if broken:
        (staging / "model.onnx").write_bytes(b"not an onnx graph")
    if review_threshold is not None:
        config = json.loads((staging / "config.json").read_text())
        (staging / "config.json").write_text(json.dumps({**config, "review_threshold": review_threshold}))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    pointer = {"model_dir": f"docflow-classifier/v{version}", "version": version}
    (home / "models" / "champion.json").write_text(json.dumps(pointer))
    return target


def test_a_champion_that_does_not_load_leaves_the_one_in_use(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clear_classifier_cache()
    home = tmp_path / "home"
    ctx = build_context(Settings(home=home, model_refresh_seconds=0))  # the pointer is read on every call
    v1 = _publish(home, 1)
    serving = ctx.classifier()
    assert serving.model_dir == v1

    _publish(home, 2, broken=True)
    with caplog.at_level(logging.ERROR):
        assert ctx.classifier() is serving
    assert "does not load; still serving" in caplog.text
    misses = classifier_cache_info().misses
    assert ctx.classifier() is serving and classifier_cache_info().misses == misses  # not retried

    v3 = _publish(home, 3)
    assert ctx.classifier().model_dir == v3


def test_without_a_model_in_use_a_champion_that_does_not_load_is_an_error(tmp_path: Path) -> None:
    clear_classifier_cache()
    home = tmp_path / "home"
    _publish(home, 1, broken=True)
    with pytest.raises(Exception):  # noqa: B017 - whatever onnxruntime raises: there is nothing to serve
        build_context(Settings(home=home, model_refresh_seconds=0)).classifier()


def test_a_version_published_again_with_other_files_is_served(tmp_path: Path) -> None:
    """Same version, same folder, other files (a registry started afresh numbers from 1 again): a warm
    process serves the new files, whose calibrated threshold is what decides review."""
    clear_classifier_cache()
    home = tmp_path / "home"
    ctx = build_context(Settings(home=home, model_refresh_seconds=0))
    _publish(home, 1, review_threshold=0.6)
    first = ctx.classifier()
    assert first.review_threshold() == 0.6

    _publish(home, 1, review_threshold=0.9)
    again = ctx.classifier()
    assert again.model_dir == first.model_dir and again is not first
    assert again.review_threshold() == 0.9
    assert ctx.classifier() is again  # loaded once


def test_a_broken_version_mended_under_the_same_number_is_served(tmp_path: Path) -> None:
    clear_classifier_cache()
    home = tmp_path / "home"
    ctx = build_context(Settings(home=home, model_refresh_seconds=0))
    _publish(home, 1)
    serving = ctx.classifier()
    _publish(home, 2, broken=True)
    assert ctx.classifier() is serving  # not loadable: the one in use stays

    mended = _publish(home, 2, review_threshold=0.85)
    now = ctx.classifier()
    assert now.model_dir == mended and now.review_threshold() == 0.85
