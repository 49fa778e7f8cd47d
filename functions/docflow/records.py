"""What the record store holds: one record per document (content), one per upload, prediction history."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from docflow.values import Prediction, Status, utcnow


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
    # The model version whose prediction had sent it to review, when a later champion re-scored it
    # (docflow.review.rescore_queue); model_version is then the later one's.
    rescored_from: str | None = None
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

    @classmethod
    def of(cls, document_id: str, prediction: Prediction) -> PredictionRecord:
        """The history entry of ``prediction``, made now."""
        return cls(
            document_id=document_id,
            predicted_class=prediction.predicted_class,
            confidence=prediction.confidence,
            scores=prediction.scores,
            model_name=prediction.model_name,
            model_version=prediction.model_version,
        )


# A person's "none of these" in the review queue: the document is none of the model's classes. Kept as the
# document's label like a class, so it counts for retraining and can be corrected; it is never a class of its
# own (the training data keeps such documents apart: docflow_training.feedback).
OUT_OF_SCOPE_LABEL = "out_of_scope"


class ReviewDecision(BaseModel):
    """One decision of a person about a document (the review page, or PUT /documents/{id}/label): the class
    they chose beside what the model suggested, who, when, and what it changed (so that it can be undone)."""

    document_id: str
    decision_id: str  # "<decided_at iso>#<random>": sorts in time order
    label: str  # one of the model's classes, or OUT_OF_SCOPE_LABEL
    reviewer: str
    api_key_id: str | None = None  # the API Gateway key the request came with (AWS only)
    decided_at: datetime
    # What the model said when the person decided: the history shows the two side by side.
    predicted_class: str | None = None
    confidence: float | None = None
    model_version: str | None = None
    # The document before and after, for undo.
    previous_label: str | None = None
    previous_status: Status
    previous_updated_at: datetime
    status: Status
    undone_at: datetime | None = None
