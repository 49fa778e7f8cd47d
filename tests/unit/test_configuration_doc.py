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
MAKEFILE_VARIABLE = re.compile(r"\b(DOCFLOW_[A-Z0-9_]+)\b")  # set or passed on by a make target


def _env_names(model: type[BaseSettings]) -> set[str]:
    prefix = model.model_config.get("env_prefix") or ""
    assert prefix.startswith("DOCFLOW_"), model
    return {f"{prefix}{name}".upper() for name in model.model_fields}


def _read_directly() -> set[str]:
    names = set()
    for folder in ("functions", "training", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for match in DIRECT_READ.finditer(path.read_text(encoding="utf-8")):
                names.add(match.group(1) or match.group(2))
    names |= set(MAKEFILE_VARIABLE.findall((ROOT / "Makefile").read_text(encoding="utf-8")))
    return names


def _prefix_of(name: str) -> str:
    """The settings model's prefix ``name`` belongs to, without its last "_" (DOCFLOW_TRAINING_MIN_EVAL_DOCS:
    DOCFLOW_TRAINING); DOCFLOW for a variable of the pipeline's or the API's, or one read directly."""
    prefixes = sorted({model.model_config.get("env_prefix") or "" for model in SETTINGS_MODELS}, key=len)
    fields = {model: _env_names(model) for model in SETTINGS_MODELS}
    owners = [model.model_config.get("env_prefix") or "" for model, names in fields.items() if name in names]
    return (owners[0] if owners else prefixes[0]).removesuffix("_")


def _documented() -> tuple[set[str], set[str]]:
    """The variables the page names: in full (`DOCFLOW_MAX_BYTES`), and in a list item's shorthand after its first
    full name, which carries that name's settings prefix (`DOCFLOW_MAX_BYTES` / `_MAX_PAGES`: DOCFLOW_MAX_PAGES;
    `DOCFLOW_TRAINING_MIN_MACRO_F1_GAIN` / `_MAX_RECALL_DROP`: DOCFLOW_TRAINING_MAX_RECALL_DROP)."""
    full: set[str] = set()
    short: set[str] = set()
    for item in re.split(r"\n(?=- |#)", DOC.read_text(encoding="utf-8")):
        tokens = re.findall(r"`([A-Z_][A-Z0-9_]*)`", item)
        named = [t for t in tokens if t.startswith("DOCFLOW_") and not t.endswith("_")]  # not `DOCFLOW_` itself
        full |= set(named)
        if named:
            short |= {_prefix_of(named[0]) + t for t in tokens if t.startswith("_")}
    return full, short


def test_every_setting_is_documented() -> None:
    wanted = set().union(*(_env_names(model) for model in SETTINGS_MODELS)) | _read_directly()
    assert {"DOCFLOW_HOME", "DOCFLOW_API_MAX_QUEUE", "DOCFLOW_CHECKPOINT_DIR", "DOCFLOW_ARTIFACTS_DIR"} <= wanted
    full, short = _documented()
    missing = sorted(wanted - full - short)
    assert not missing, f"not in {DOC.relative_to(ROOT)}: {missing}"


def test_the_page_names_no_variable_that_does_not_exist() -> None:
    known = set().union(*(_env_names(model) for model in SETTINGS_MODELS)) | _read_directly()
    full, short = _documented()
    assert not sorted((full | short) - known)
