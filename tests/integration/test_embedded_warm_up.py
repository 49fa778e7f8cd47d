"""Embedded workers load the model before their first document, and a model that cannot load does not
take the pool down: the documents that need it end FAILED with the cause, each its own row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from docflow import telemetry
from docflow.domain.classifier import classifier_cache_info, clear_classifier_cache
from docflow.pipeline import embedded, supervisor
from docflow.samples import MEMO, text_pdf
from docflow.settings import DEFAULT_MODEL_DIR, Settings
from docflow.values import Status

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_sink() -> Iterator[None]:
    """The workers' signals are replayed into this process's sink: not into the EMF buffer that importing
    the Lambda handlers (earlier tests) installs, where they would wait for another test's flush."""
    previous = telemetry.configure(telemetry.NullSink())
    yield
    telemetry.configure(previous)


def test_a_worker_loads_the_model_at_start(docflow_home: Path) -> None:
    clear_classifier_cache()
    supervisor.init_worker(Settings(home=docflow_home, model_dir=DEFAULT_MODEL_DIR))
    assert classifier_cache_info().currsize == 1  # loaded before any document
    supervisor.worker_context().classifier()
    assert classifier_cache_info().misses == 1  # the documents reuse it


def test_a_model_that_cannot_load_fails_documents_not_the_pool(docflow_home: Path, tmp_path: Path) -> None:
    clear_classifier_cache()
    files = []
    for name in ("a.pdf", "b.pdf"):
        path = tmp_path / name
        path.write_bytes(text_pdf([f"{MEMO}\n{name}"]))
        files.append((path, str(path)))
    settings = Settings(home=docflow_home, model_dir=tmp_path / "no-model")
    results = embedded.process_paths(files, settings, workers=2)
    assert [r.status for r in results] == [Status.FAILED, Status.FAILED]
    assert all("no-model" in (r.reason or "") for r in results), [r.reason for r in results]
