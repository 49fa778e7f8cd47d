"""Wiring: which stores, which model, which OCR engine — decided once from Settings.

Handlers and the embedded runner build a StepContext; step functions receive it and never look at the
environment themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from docflow.model_source import ModelSource, build_model_source
from docflow.ports import BlobStore, RecordStore
from docflow.settings import Settings, get_settings

if TYPE_CHECKING:
    from docflow.domain.classifier import ModelFingerprint, TextClassifier
    from docflow.domain.ocr import OcrEngine


logger = logging.getLogger(__name__)


def resolve_model_dir(settings: Settings) -> Path:
    """An explicit DOCFLOW_MODEL_DIR wins; else the published champion (DOCFLOW_HOME/models, or the model
    bucket on the aws backend); else the set-up default. Read now; StepContext.classifier caches it."""
    return build_model_source(settings, ttl_seconds=0).model_dir()


@dataclass
class StepContext:
    settings: Settings
    blobs: BlobStore
    records: RecordStore
    ocr_engine: OcrEngine | None = field(default=None)
    model_source: ModelSource | None = field(default=None)
    # Set by an embedded run that found no other run using its DOCFLOW_HOME (pipeline.run_lock.holding_run_lock):
    # an unfinished record written before that run began is an orphan, however recent. Not a setting.
    orphans_before: datetime | None = field(default=None)
    # The classifier serving now, and a newer champion directory (with its files' fingerprint) that failed
    # to load: not tried again until the pointer moves or those files are replaced.
    _serving: TextClassifier | None = field(default=None, repr=False)
    _broken: tuple[Path, ModelFingerprint] | None = field(default=None, repr=False)

    def classifier(self) -> TextClassifier:
        # Imported here so Validate/ExtractText cold starts never load onnxruntime.
        from docflow.domain.classifier import load_classifier, model_fingerprint

        # The champion pointer is read at cold start and again every model_refresh_seconds; load_classifier
        # loads a directory again when the pointer names another one or its files were replaced.
        if self.model_source is None:
            self.model_source = build_model_source(self.settings, ttl_seconds=self.settings.model_refresh_seconds)
        model_dir = self.model_source.model_dir()
        identity = (model_dir, model_fingerprint(model_dir))
        if self._serving is not None and identity == self._broken:
            return self._serving
        try:
            classifier = load_classifier(*identity)
        except Exception:
            if self._serving is None:
                raise  # nothing loaded yet: no model we know is right to fall back on
            # A newly published champion that does not load must not stop classification: keep the one in
            # use, say so loudly, and try the pointer's next champion when it changes.
            self._broken = identity
            logger.exception(
                "the champion at %s does not load; still serving %s %s",
                model_dir,
                self._serving.name,
                self._serving.version,
            )
            return self._serving
        self._serving, self._broken = classifier, None
        return classifier


def build_context(settings: Settings) -> StepContext:
    if settings.backend == "aws":
        # Imported here, each backend's adapters on its own: the local runtime never loads boto3, and a
        # Lambda never loads sqlite3.
        from docflow.adapters.dynamodb import DynamoRecordStore
        from docflow.adapters.s3 import S3BlobStore

        return StepContext(
            settings=settings,
            blobs=S3BlobStore(settings.documents_bucket or ""),
            records=DynamoRecordStore(settings.table_name or ""),
        )
    # (see above: a Lambda never loads these)
    from docflow.adapters.files import LocalBlobStore
    from docflow.adapters.sqlite import SqliteRecordStore

    return StepContext(
        settings=settings,
        blobs=LocalBlobStore(settings.home / "blobs"),
        records=SqliteRecordStore(settings.home / "docflow.sqlite3"),
    )


@lru_cache(maxsize=1)
def get_context() -> StepContext:
    """The process-wide context (a Lambda container keeps it across invocations)."""
    return build_context(get_settings())
