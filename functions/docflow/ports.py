"""The small interfaces the domain talks to, implemented in adapters/: the stores on AWS and locally, the
event publisher on AWS only (the local backend sends no events)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from docflow.records import DocumentRecord, PredictionRecord, ReviewDecision, UploadRecord


class BlobNotFoundError(KeyError):
    """The object does not exist in the blob store."""


class BlobStore(ABC):
    """Objects by key: the documents bucket on AWS, a directory locally."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def get(self, key: str, version_id: str | None = None) -> bytes:
        """The object's bytes; with version_id, that version's (a versioned bucket keeps every one).
        Raise BlobNotFoundError when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str, version_id: str | None = None) -> int:
        """Bytes in the object, without reading it. Raise BlobNotFoundError when absent."""

    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = 1 << 20, version_id: str | None = None) -> Iterator[bytes]:
        """Stream the object (hash a file too big to hold in memory)."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the objects live (bucket name, directory) for messages."""


class RecordStore(ABC):
    """Document records, upload records and prediction history: DynamoDB on AWS, SQLite locally.

    Keyed by document_id (sha256 of content). Writes that decide ownership are conditional, so the
    same event delivered twice cannot create two records.
    """

    @abstractmethod
    def create_document(self, record: DocumentRecord) -> DocumentRecord | None:
        """Insert if absent. Return None when inserted, else the existing record (nothing written)."""

    @abstractmethod
    def put_document(self, record: DocumentRecord, *, keep_label: bool = False, if_status: str | None = None) -> bool:
        """Insert or replace. With keep_label, a label on file stays (the record's own label is written only
        where none is on file): the pipeline's write of its outcome never drops a label a user set meanwhile.
        With if_status, only a record on file in that status is replaced (nothing is inserted): a re-scoring
        of a queued document never overwrites a person's decision made meanwhile. True when written."""

    @abstractmethod
    def decide(self, decision: ReviewDecision) -> DocumentRecord | None:
        """A person's decision, in one atomic write: the document's label, status and updated_at become the
        decision's (label, status, decided_at), and the decision joins the document's history, provided the
        document is still in decision.previous_status with decision.previous_label. The record as written, or
        None (nothing written) when there is no such document or it has changed since it was read."""

    @abstractmethod
    def undo_decision(self, decision: ReviewDecision, undone_at: datetime) -> DocumentRecord | None:
        """Take a decision back atomically: the document's label, status and updated_at return to what they
        were before it, and the decision is marked undone (it stays in the history), provided the document is
        still as the decision left it. The record as written, or None (nothing written)."""

    @abstractmethod
    def list_decisions(self, document_id: str) -> list[ReviewDecision]:
        """The document's decisions, oldest first, undone ones included."""

    @abstractmethod
    def list_review_queue(
        self, predicted_class: str | None = None, code: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[DocumentRecord], str | None]:
        """NEEDS_REVIEW documents, the longest waiting (oldest updated_at) first, optionally only those the
        model put in one class and/or sent for one reason (a ReviewCode); a page and the next page's cursor."""

    @abstractmethod
    def count_review_queue(self, predicted_class: str | None = None, code: str | None = None) -> int:
        """How many documents list_review_queue would list with these filters, over all pages."""

    @abstractmethod
    def restart_document(self, record: DocumentRecord, stale_before: datetime | None = None) -> bool:
        """Replace the document's record only while it is FAILED (a retry takes it over), or, given
        stale_before, while it is unfinished and was last written before then (an orphan of a run that died).
        A label on file stays, as with put_document(keep_label=True): one set since the caller read the record
        is not lost. False otherwise: another delivery restarted it first, or its run is still going."""

    @abstractmethod
    def get_document(self, document_id: str) -> DocumentRecord | None: ...

    @abstractmethod
    def list_documents(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[DocumentRecord], str | None]: ...

    @abstractmethod
    def put_upload(self, upload: UploadRecord) -> None:
        """Insert or replace the record of this object (source and version). A record of a known version
        also removes its source's RECEIVED record written before any version was known: the API's, put
        before the bytes (whose arrival starts the pipeline) so that a poll right after the 202 finds it."""

    @abstractmethod
    def create_upload(self, upload: UploadRecord) -> UploadRecord | None:
        """put_upload, unless this object's record already holds an outcome (any status but RECEIVED or
        FAILED). Return None when written, else the record on file (nothing written): of two deliveries of
        one object, exactly one records it."""

    @abstractmethod
    def list_uploads(self, document_id: str) -> list[UploadRecord]: ...

    @abstractmethod
    def add_prediction(self, prediction: PredictionRecord) -> None: ...

    @abstractmethod
    def list_predictions(self, document_id: str) -> list[PredictionRecord]: ...

    @abstractmethod
    def iter_documents(self) -> Iterator[DocumentRecord]:
        """Every document record, in no particular order: a full pass (the training loop's collection of
        users' labels), read the cheapest way the store has."""

    @abstractmethod
    def list_documents_updated(self, statuses: Sequence[str], since: datetime, until: datetime) -> list[DocumentRecord]:
        """Documents now in one of ``statuses`` whose last update falls in [since, until), oldest first
        (the drift job's window of recent predictions: CLASSIFIED and NEEDS_REVIEW records)."""

    @abstractmethod
    def increment_counter(self, name: str) -> int:
        """Atomically add 1 to a named counter (created at 0) and return the new value."""

    @abstractmethod
    def get_counter(self, name: str) -> int:
        """A counter's value; 0 when it was never incremented."""


class EventPublisher(ABC):
    """Sends one application event (EventBridge on AWS: docflow.adapters.events)."""

    @abstractmethod
    def publish(self, source: str, detail_type: str, detail: dict[str, Any]) -> None: ...
