"""docs/configuration.md names every DOCFLOW_* environment variable the product reads: each field of its
settings models (the pipeline's, the API's, the SageMaker launcher's, the training loop's) and each variable
read directly from the environment. A setting added without a word for its users fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from docflow.api.config import ApiSettings
from docflow.settings import Settings
from docflow_training.launch import SageMakerJobConfig
from docflow_training.loop import LoopSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
SETTINGS_MODELS: tuple[type[BaseSettings], ...] = (Settings, ApiSettings, SageMakerJobConfig, LoopSettings)
# os.environ / env.get("DOCFLOW_...") / getenv("DOCFLOW_...") in the product's code
DIRECT_READ = re.compile(
    r"""(?:environ|env)(?:\.get\(|\[)\s*["'](DOCFLOW_[A-Z0-9_]+)["']|getenv\(\s*["'](DOCFLOW_[A-Z0-9_]+)"""
)
MAKEFILE_VARIABLE = re.compile(r"^(DOCFLOW_[A-Z0-9_]+)\s*\?=", re.MULTILINE)


def _env_names(model: type[BaseSettings]) -> set[str]:
    prefix = model.model_config.get("env_prefix") or ""
    assert prefix.startswith("DOCFLOW_"), model
    return {f"{prefix}{name}".upper() for name in model.model_fields}


def _read_directly() -> set[str]:
    names = set()
    for folder in ("functions", "training"):
        for path in (ROOT / folder).rglob("*.py"):
            for match in DIRECT_READ.finditer(path.read_text(encoding="utf-8")):
                names.add(match.group(1) or match.group(2))
    names |= set(MAKEFILE_VARIABLE.findall((ROOT / "Makefile").read_text(encoding="utf-8")))
    return names


def _documented() -> set[str]:
    """The variables the page names: in full (`DOCFLOW_MAX_BYTES`), or in a list item's shorthand after a full
    name (`DOCFLOW_MAX_BYTES` / `_MAX_PAGES`: DOCFLOW_ + _MAX_PAGES; `DOCFLOW_TRAINING_MIN_MACRO_F1_GAIN` /
    `_MAX_RECALL_DROP`: DOCFLOW_TRAINING + _MAX_RECALL_DROP), where the full name's own prefix is kept."""
    named: set[str] = set()
    for item in re.split(r"\n(?=- |#)", DOC.read_text(encoding="utf-8")):
        tokens = re.findall(r"`([A-Z_][A-Z0-9_]*)`", item)
        full = [t for t in tokens if t.startswith("DOCFLOW_")]
        named |= set(full)
        for short in (t for t in tokens if t.startswith("_")):
            named |= {name[:i] + short for name in full for i, ch in enumerate(name) if ch == "_"}
    return named


def test_every_setting_is_documented() -> None:
    wanted = set().union(*(_env_names(model) for model in SETTINGS_MODELS)) | _read_directly()
    assert {"DOCFLOW_HOME", "DOCFLOW_API_MAX_QUEUE", "DOCFLOW_CHECKPOINT_DIR", "DOCFLOW_DATA_DIR"} <= wanted
    missing = sorted(wanted - _documented())
    assert not missing, f"not in {DOC.relative_to(ROOT)}: {missing}"


def test_the_page_names_no_variable_that_does_not_exist() -> None:
    known = set().union(*(_env_names(model) for model in SETTINGS_MODELS)) | _read_directly()
    full = set(re.findall(r"`(DOCFLOW_[A-Z0-9_]+)`", DOC.read_text(encoding="utf-8")))
    assert not sorted(full - known)
