"""What the record store holds: one record per document (content), one per upload, prediction history."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from docflow.models import Status, utcnow


class DocumentRecord(BaseModel):
    """The processing state and outcome of one distinct content (document_id = sha256)."""

    document_id: str
    status: Status
    source: str  # the first upload's source (path given to the CLI, or bucket/key)
    version_id: str | None = None  # the first upload's object version (S3 versioned bucket)
    blob_key: str | None = None  # where the bytes are kept in the blob store
    media_type: str | None = None
    size_bytes: int | None = None
    pages: int | None = None
    text_source: str | None = None
    ocr_confidence: float | None = None
    predicted_class: str | None = None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    model_version: str | None = None
    code: str | None = None  # machine code of a rejection or failure
    reason: str | None = None  # human reason of a rejection, failure or review
    label: str | None = None  # a user's correction (feedback for retraining)
    # The run processing it (PipelineState.owner): a retry of that run's own step is not another delivery.
    owner: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


def object_id(source: str, version_id: str | None) -> str:
    """One uploaded object: its source, and its version where the store keeps versions (S3's
    s3://bucket/key?versionId=... form). With the content hash it is the idempotency key: a delivery of
    an object already on record is a replay, not new work."""
    return f"{source}?versionId={version_id}" if version_id else source


class UploadRecord(BaseModel):
    """One uploaded object and its own terminal status (DUPLICATE for a repeat of known content)."""

    document_id: str
    source: str
    version_id: str | None = None
    status: Status
    duplicate_of: str | None = None
    received_at: datetime = Field(default_factory=utcnow)

    @property
    def object_id(self) -> str:
        return object_id(self.source, self.version_id)


class PredictionRecord(BaseModel):
    document_id: str
    predicted_class: str
    confidence: float
    scores: dict[str, float]
    model_name: str
    model_version: str
    created_at: datetime = Field(default_factory=utcnow)
