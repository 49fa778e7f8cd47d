"""Shared test set-up: a private DOCFLOW_HOME per test, fake AWS credentials, where the shared data is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Set before any handler module is imported: powertools reads these at import.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "docflow")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Docflow")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["OMP_THREAD_LIMIT"] = "1"


def data_dir() -> Path:
    return Path(os.environ.get("DOCFLOW_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    root = data_dir()
    if not (root / "dev").is_dir():
        pytest.skip(f"shared data not found at {root} (set DOCFLOW_DATA_DIR)")
    return root


@pytest.fixture(autouse=True)
def docflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty state directory; nothing leaks into ~/.docflow."""
    home = tmp_path / "docflow-home"
    monkeypatch.setenv("DOCFLOW_HOME", str(home))
    # MLflow's set_tracking_uri also exports MLFLOW_TRACKING_URI to the process: never inherit another test's.
    for var in (
        "DOCFLOW_MODEL_DIR",
        "DOCFLOW_BACKEND",
        "DOCFLOW_DOCUMENTS_BUCKET",
        "DOCFLOW_TABLE_NAME",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
    ):
        monkeypatch.delenv(var, raising=False)
    from docflow.context import get_context
    from docflow.settings import get_settings

    get_settings.cache_clear()
    get_context.cache_clear()
    return home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained once per session from tests/fixtures/corpus (classes email, news_article, resume)."""
    out = tmp_path_factory.getbasetemp() / "api-tiny-model"
    if not (out / "model.onnx").is_file():
        from docflow_training.train import TrainConfig, train_model

        config = TrainConfig(seed=7, vocab_size=400, c_grid=(1.0, 10.0), cv_folds=3, holdout_fraction=0.25)
        train_model(REPO / "tests" / "fixtures" / "corpus", out, config)
    return out
