"""The JSON state a document carries through the pipeline.

It is the payload of every Lambda task and the state of every Step Functions execution; the embedded
runner passes the very same model between the same step functions.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from docflow.records import object_id
from docflow.values import Prediction, Status


class DocumentRef(BaseModel):
    """Where an uploaded object is: a key in the documents blob store (the bucket on AWS)."""

    key: str
    bucket: str | None = None
    version_id: str | None = None  # the S3 object version the event names: the bytes read are that version's
    source: str  # what the user named: a CLI path, s3://bucket/key, an API upload's file name

    @property
    def object_id(self) -> str:
        return object_id(self.source, self.version_id)


class StepError(BaseModel):
    """Step Functions' Catch output ({"Error", "Cause"}), also produced by the embedded runner."""

    Error: str
    Cause: str = ""

    @property
    def message(self) -> str:
        # A Lambda error's Cause is a JSON object; keep only its message for people.
        try:
            cause = json.loads(self.Cause)
        except (ValueError, TypeError):
            return self.Cause
        return str(cause.get("errorMessage", self.Cause)) if isinstance(cause, dict) else self.Cause


class PageRange(BaseModel):
    first_page: int
    last_page: int


class PagePart(BaseModel):
    """Text of one page range of a long PDF, extracted by one worker (a Map iteration on AWS)."""

    first_page: int
    last_page: int
    key: str  # blob key of the range's ExtractionResult JSON


class PageRangeTask(BaseModel):
    """A Map item: which pages of which document to extract."""

    state: PipelineState
    first_page: int
    last_page: int


class PipelineState(BaseModel):
    ref: DocumentRef
    # The run that owns this delivery's work: the Step Functions execution's id, or the embedded runner's own
    # per-run id. A retried step of the same run finds the document record it wrote itself, and carries on.
    owner: str | None = None
    document_id: str | None = None
    status: Status = Status.RECEIVED
    # True when Validate hands the document to ExtractText; False sends it to RecordOutcome.
    proceed: bool = False
    # Set when the same upload was delivered again and its outcome already exists.
    replay: bool = False
    media_type: str | None = None
    size_bytes: int | None = None
    pages: int | None = None
    code: str | None = None
    reason: str | None = None
    duplicate_of: str | None = None
    languages: str | None = None  # OCR language override for this document (e.g. "rus")
    # Long PDFs: page ranges set by Validate, each extracted separately, then merged.
    page_ranges: list[PageRange] | None = None
    parts: list[PagePart] | None = None
    text_key: str | None = None
    text_source: str | None = None
    ocr_confidence: float | None = None
    prediction: Prediction | None = None
    result_key: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    error: StepError | None = None


PageRangeTask.model_rebuild()
