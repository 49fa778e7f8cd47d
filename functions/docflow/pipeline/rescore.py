"""After a promotion: the review queue scored again by the new champion, from each document's stored text.

A document the new champion is sure of leaves the queue (CLASSIFIED); one it is not sure of stays, with the
new champion's suggestion and reason (and its place in the queue). Either way the prediction joins the
document's history beside the one that had queued it, and the record names the model version it came from
(``rescored_from``). No OCR runs again: the text, and each page's layout, are the ones ExtractText stored.

The write is conditional on the document still being NEEDS_REVIEW: a person who decides it meanwhile wins.
Called by `docflow model promote` and a promoting `docflow train` (embedded), and by the training state
machine's RescoreQueue step after Publish (handlers/rescore_queue.py), which passes a time budget and
carries the cursor from one invocation to the next.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from docflow.context import StepContext
from docflow.pipeline.compute import classify_text, report_prediction
from docflow.pipeline.steps import result_key, text_key
from docflow.ports import BlobNotFoundError
from docflow.records import DocumentRecord, PredictionRecord
from docflow.values import ExtractionResult, Prediction, Status, utcnow

PAGE_SIZE = 50
START = ""  # the cursor of a run stopped on the queue's first page: go on from the start


@dataclass
class RescoreReport:
    model_version: str
    scanned: int = 0  # queued documents looked at
    settled: int = 0  # now CLASSIFIED by the new champion: out of the queue
    still_queued: int = 0  # the new champion is not sure either (its suggestion is on record now)
    current: int = 0  # already scored by this champion: nothing to do
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (text gone, decided meanwhile)
    cursor: str | None = None  # where to go on from when the time budget ran out; None when the queue is done

    @property
    def done(self) -> bool:
        return self.cursor is None

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def rescore_queue(
    ctx: StepContext,
    *,
    cursor: str | None = None,
    deadline: float | None = None,
    progress: Callable[[RescoreReport], None] | None = None,
) -> RescoreReport:
    """Score every NEEDS_REVIEW document again with the champion ``ctx`` serves now. ``deadline`` (a
    time.monotonic() value) stops it between documents, with ``report.cursor`` set to go on from."""
    model = ctx.classifier()
    report = RescoreReport(model_version=model.version)
    cursor = cursor or None
    while True:
        page, next_cursor = ctx.records.list_review_queue(limit=PAGE_SIZE, cursor=cursor)
        for record in page:
            if deadline is not None and time.monotonic() >= deadline:
                # From this page's start: what was done on it is skipped next time (settled, or current).
                report.cursor = cursor or START
                return report
            _rescore_one(ctx, record, report)
            if progress is not None:
                progress(report)
        if next_cursor is None:
            report.cursor = None
            return report
        cursor = next_cursor


def _rescore_one(ctx: StepContext, record: DocumentRecord, report: RescoreReport) -> None:
    report.scanned += 1
    if record.model_version == ctx.classifier().version:
        report.current += 1
        return
    try:
        rescored = score_again(ctx, record)
    except BlobNotFoundError:
        report.skip("text no longer stored")
        return
    if rescored is None:
        report.skip("decided meanwhile")
    elif rescored.record.status is Status.NEEDS_REVIEW:
        report.still_queued += 1
    else:
        report.settled += 1


@dataclass
class Rescored:
    prediction: Prediction
    record: DocumentRecord  # as written
    confident: bool  # the pipeline's review rule found nothing to send to a person


def score_again(ctx: StepContext, record: DocumentRecord) -> Rescored | None:
    """Classify a stored document's text again with the champion ``ctx`` serves, under the pipeline's review
    rule, and record it: the prediction in the history, the result file, the document. A document a person
    decided (REVIEWED) keeps its status and label; a queued one the champion is still unsure of keeps its place
    in the queue. The write is conditional on the document's status being unchanged since ``record`` was read:
    None (nothing written) when it was not. BlobNotFoundError when the text is no longer stored."""
    extraction = ExtractionResult.model_validate_json(ctx.blobs.get(text_key(record.document_id)))
    prediction, review = classify_text(ctx.classifier(), extraction, ctx.settings.review_threshold)
    if record.status is Status.REVIEWED:
        status, code, reason = Status.REVIEWED, record.code, record.reason
    else:
        status = Status.NEEDS_REVIEW if review else Status.CLASSIFIED
        code, reason = review if review else (None, None)
    still_queued = status is Status.NEEDS_REVIEW and record.status is Status.NEEDS_REVIEW
    updated = record.model_copy(
        update={
            "status": status,
            "code": code,
            "reason": reason,
            "predicted_class": prediction.predicted_class,
            "confidence": prediction.confidence,
            "scores": prediction.scores,
            "model_version": prediction.model_version,
            "rescored_from": record.model_version
            if record.model_version != prediction.model_version
            else record.rescored_from,
            "updated_at": record.updated_at if still_queued else utcnow(),  # the queue is oldest first
        }
    )
    # The record first, conditionally, and the result file only once it is written (classify_step writes the
    # result first): a decision made meanwhile must not find its document's result file overwritten.
    if not ctx.records.put_document(updated, keep_label=True, if_status=record.status.value):
        return None
    ctx.records.add_prediction(PredictionRecord.of(record.document_id, prediction))
    ctx.blobs.put(
        result_key(record.document_id),
        json.dumps(
            {"document": updated.model_dump(mode="json"), "prediction": prediction.model_dump(mode="json")}, indent=2
        ).encode(),
        content_type="application/json",
    )
    report_prediction(prediction)
    return Rescored(prediction=prediction, record=updated, confident=review is None)
