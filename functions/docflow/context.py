"""Wiring: which stores, which model, which OCR engine — decided once from Settings.

Handlers and the embedded runner build a StepContext; step functions receive it and never look at the
environment themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from docflow.errors import ConfigurationError
from docflow.ports import BlobStore, RecordStore
from docflow.settings import DEFAULT_MODEL_DIR, Settings, get_settings

if TYPE_CHECKING:
    from docflow.domain.classifier import TextClassifier
    from docflow.domain.ocr import OcrEngine


def resolve_model_dir(settings: Settings) -> Path:
    """An explicit DOCFLOW_MODEL_DIR wins; else the locally published champion; else the set-up default."""
    if settings.model_dir:
        return settings.model_dir
    pointer = settings.home / "models" / "champion.json"
    if pointer.is_file():
        try:
            target = Path(json.loads(pointer.read_text())["model_dir"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"unreadable champion pointer {pointer}: {exc}") from exc
        return target if target.is_absolute() else pointer.parent / target
    return DEFAULT_MODEL_DIR


@dataclass
class StepContext:
    settings: Settings
    blobs: BlobStore
    records: RecordStore
    ocr_engine: OcrEngine | None = field(default=None)

    def classifier(self) -> TextClassifier:
        # Imported here so Validate/ExtractText cold starts never load onnxruntime.
        from docflow.domain.classifier import load_classifier

        return load_classifier(resolve_model_dir(self.settings))


def build_context(settings: Settings) -> StepContext:
    if settings.backend == "aws":
        from docflow.adapters.aws import DynamoRecordStore, S3BlobStore

        return StepContext(
            settings=settings,
            blobs=S3BlobStore(settings.documents_bucket or ""),
            records=DynamoRecordStore(settings.table_name or ""),
        )
    from docflow.adapters.local import LocalBlobStore, SqliteRecordStore

    return StepContext(
        settings=settings,
        blobs=LocalBlobStore(settings.home / "blobs"),
        records=SqliteRecordStore(settings.home / "docflow.sqlite3"),
    )


@lru_cache(maxsize=1)
def get_context() -> StepContext:
    """The process-wide context (a Lambda container keeps it across invocations)."""
    return build_context(get_settings())
