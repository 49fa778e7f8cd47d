"""A person's decision about a document, written straight to a record store (what review.decide does after
its checks): for tests of the stores and of the pipeline's writes around a label."""

from __future__ import annotations

from datetime import datetime

from docflow.ports import RecordStore
from docflow.records import DocumentRecord, ReviewDecision
from docflow.values import Status, utcnow


def decide(records: RecordStore, document_id: str, label: str, when: datetime | None = None) -> DocumentRecord | None:
    """Label the document as a person would; the record as written, or None when there is no such document."""
    when = when or utcnow()
    record = records.get_document(document_id)
    return records.decide(
        ReviewDecision(
            document_id=document_id,
            decision_id=f"{when.isoformat()}#test",
            label=label,
            reviewer="tester",
            decided_at=when,
            predicted_class=record.predicted_class if record else None,
            previous_label=record.label if record else None,
            previous_status=record.status if record else Status.PROCESSING,
            previous_updated_at=record.updated_at if record else when,
            status=Status.REVIEWED
            if record and record.status is Status.NEEDS_REVIEW
            else (record.status if record else Status.PROCESSING),
        )
    )
