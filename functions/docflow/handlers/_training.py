"""What the training state machine's handlers share: the model bucket and the loop's settings."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from docflow.adapters.s3 import S3BlobStore
from docflow.context import get_context
from docflow.errors import ConfigurationError
from docflow.ports import BlobStore
from docflow_training.loop import LoopSettings


@lru_cache(maxsize=1)
def loop_settings() -> LoopSettings:
    return LoopSettings()


def model_bucket() -> tuple[BlobStore, str]:
    bucket = get_context().settings.model_bucket
    if not bucket:
        raise ConfigurationError("the training loop needs the model bucket (DOCFLOW_MODEL_BUCKET)")
    return S3BlobStore(bucket), bucket


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder under /tmp per invocation (a warm container keeps /tmp)."""
    with tempfile.TemporaryDirectory(prefix="docflow-training-") as tmp:
        yield Path(tmp)
