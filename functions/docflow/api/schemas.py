"""Every request and response body of the API, as pydantic models (the OpenAPI schema is made from these).

The prediction endpoints keep the seed platform's field names (success, predicted_class, confidence_score,
is_confident, model_name, model_version, all_scores) so its clients keep working.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from docflow.values import Status

DOCUMENT_ID_PATTERN = r"^[0-9a-f]{64}$"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: str = Field(description="machine-readable code, e.g. not_found, payload_too_large, invalid_request")
    detail: str = Field(description="what went wrong and what to do about it, for people")
    errors: list[FieldError] | None = Field(default=None, description="the invalid fields (422 only)")
    request_id: str | None = None


class StoresHealth(BaseModel):
    records: bool
    blobs: bool


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    backend: Literal["local", "aws"]
    model_loaded: bool
    model_name: str | None = None
    model_version: str | None = None
    stores: StoresHealth


class DocumentAccepted(BaseModel):
    """202: the upload is stored and will be processed; poll status_url until `terminal` is true."""

    document_id: str = Field(description="SHA-256 of the content, the id every other endpoint takes")
    upload_id: str
    status: Status
    file_name: str
    size_bytes: int
    media_type: str | None = None
    already_known: bool = Field(description="the same content was uploaded before (this upload ends DUPLICATE)")
    status_url: str


class UploadUrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    file_name: str = Field(min_length=1, max_length=255)
    sha256: str | None = Field(
        default=None,
        pattern=DOCUMENT_ID_PATTERN,
        description="the file's SHA-256 (hex); when given, storage refuses other bytes and the answer names "
        "the document_id in advance",
    )


class UploadUrlResponse(BaseModel):
    method: Literal["PUT"] = "PUT"
    url: str
    headers: dict[str, str] = Field(description="headers the PUT must carry exactly")
    key: str
    expires_at: datetime
    max_bytes: int = Field(description="larger files are stored but end REJECTED (TOO_LARGE)")
    document_id: str | None = None


class DocumentPrediction(BaseModel):
    predicted_class: str
    confidence_score: float
    is_confident: bool
    model_version: str | None = None
    all_scores: dict[str, float] | None = None


class UploadInfo(BaseModel):
    source: str
    status: Status
    duplicate_of: str | None = None
    received_at: datetime


class DocumentResponse(BaseModel):
    document_id: str
    status: Status
    terminal: bool
    code: str | None = None
    reason: str | None = None
    source: str | None = None
    media_type: str | None = None
    size_bytes: int | None = None
    pages: int | None = None
    text_source: str | None = None
    ocr_confidence: float | None = None
    prediction: DocumentPrediction | None = None
    label: str | None = None
    rescored_from: str | None = Field(
        default=None, description="the model version that had queued it, when a later champion re-scored it"
    )
    timings: dict[str, float] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    uploads: list[UploadInfo] | None = Field(default=None, description="every upload of this content (detail only)")


class DocumentPage(BaseModel):
    items: list[DocumentResponse]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; null at the end")


class PredictTextRequest(BaseModel):
    # Lax, as the seed's model was: its clients may send return_all_scores as 0/1 or "true", or extra keys.
    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1, max_length=1_000_000)
    return_all_scores: bool = False

    @field_validator("text")
    @classmethod
    def _has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must contain something other than whitespace")
        return value


class PredictionResponse(BaseModel):
    success: bool = True
    predicted_class: str
    confidence_score: float
    is_confident: bool = Field(description="confidence_score is at or above the review threshold")
    model_name: str
    model_version: str
    all_scores: dict[str, float] | None = Field(default=None, description="every class's score (return_all_scores)")
    processing_time: float = Field(description="seconds")


class UploadPredictionResponse(PredictionResponse):
    document_id: str
    file_name: str
    media_type: str
    pages: int
    text_source: str
    ocr_confidence: float | None = None
    text_chars: int
    timings: dict[str, float]


class DocumentPredictionResponse(PredictionResponse):
    document_id: str
    status: Status
    reason: str | None = None


class PredictionHistoryItem(BaseModel):
    predicted_class: str
    confidence_score: float
    model_name: str
    model_version: str
    all_scores: dict[str, float]
    created_at: datetime


class DecisionInfo(BaseModel):
    """A person's decision beside the model's suggestion at the time."""

    model_config = ConfigDict(protected_namespaces=())

    decision_id: str
    label: str
    reviewer: str
    api_key_id: str | None = None
    decided_at: datetime
    predicted_class: str | None = None
    confidence_score: float | None = None
    model_version: str | None = None
    previous_status: Status
    status: Status
    undone_at: datetime | None = None


class PredictionHistory(BaseModel):
    document_id: str
    predictions: list[PredictionHistoryItem]
    decisions: list[DecisionInfo] = Field(
        default_factory=list, description="people's decisions (review page, label), oldest first, undone ones too"
    )


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field(min_length=1, max_length=100, description="one of the model's classes (GET /model)")
    reviewer: str | None = Field(default=None, min_length=1, max_length=64, description="who decides; default: api")

    @field_validator("reviewer")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return None if value is None else _reviewer_name(value)


def _reviewer_name(value: str) -> str:
    value = value.strip()
    if not value or not value.isprintable():
        raise ValueError("reviewer must be a printable name")
    return value


class ClassMetrics(BaseModel):
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    support: int | None = None


class ModelMetrics(BaseModel):
    """The champion's held-out evaluation (metrics.json)."""

    accuracy: float | None = None
    macro_f1: float | None = None
    weighted_f1: float | None = None
    log_loss: float | None = None
    n_train: int | None = None
    n_holdout: int | None = None
    per_class: dict[str, ClassMetrics] = Field(default_factory=dict)


class ScanHeadInfo(BaseModel):
    """The model's scan head: how pages read by OCR are decided (docflow.domain.scan_head)."""

    review_threshold: float = Field(description="below this confidence a page read by OCR goes to review")
    uncalibrated: list[str] = Field(description="classes no real scan calibrated: such pages go to a person")
    fitted_on_scans: int | None = Field(default=None, description="how many real labelled scans it was fitted on")
    cross_validated: dict[str, Any] | None = Field(
        default=None, description="its figures on those scans, cross-validated (top1, macro_f1, …)"
    )


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    classes: list[str]
    review_threshold: float
    created_at: datetime | None = None
    metrics: ModelMetrics | None = None
    scan_head: ScanHeadInfo | None = None


# -- the review queue ---------------------------------------------------------------------------------------


class ReviewQueueItem(BaseModel):
    """A NEEDS_REVIEW document as the review page lists it."""

    model_config = ConfigDict(protected_namespaces=())

    document_id: str
    file_name: str = Field(description="the last part of the first upload's name")
    media_type: str | None = None
    pages: int | None = None
    text_source: str | None = None
    ocr_confidence: float | None = None
    predicted_class: str | None = None
    confidence_score: float | None = None
    all_scores: dict[str, float] | None = None
    code: str | None = Field(default=None, description="why it is here: LOW_CONFIDENCE, OUT_OF_SCOPE or NO_TEXT")
    reason: str | None = None
    model_version: str | None = None
    queued_at: datetime = Field(description="when it entered the queue (its last update)")


class ReviewQueuePage(BaseModel):
    total: int = Field(description="documents waiting with these filters, over all pages")
    items: list[ReviewQueueItem]
    next_cursor: str | None = None


class DocumentTextPage(BaseModel):
    page: int
    text: str
    source: str
    confidence: float | None = None


class DocumentText(BaseModel):
    document_id: str
    pages: list[DocumentTextPage]


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field(
        min_length=1,
        max_length=100,
        description="one of GET /model's classes, or out_of_scope: none of them",
    )
    reviewer: str = Field(min_length=1, max_length=64, description="who decides (the review page asks once)")
    expect_status: Status | None = Field(
        default=None,
        strict=False,  # a status name in JSON (the model is strict otherwise)
        description="the status the decider saw (the review page sends NEEDS_REVIEW): 409 when the document has "
        "changed since (another person decided it), instead of recording this as a correction",
    )

    @field_validator("reviewer")
    @classmethod
    def _printable(cls, value: str) -> str:
        return _reviewer_name(value)


class DecisionResponse(BaseModel):
    decision: DecisionInfo
    document: DocumentResponse
