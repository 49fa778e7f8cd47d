"""The review queue in both record stores (SQLite; DynamoDB under moto): a decision and its undo are atomic
and conditional, the queue lists the longest waiting first with its filters and length, and a re-scoring
never overwrites a person's decision."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from moto import mock_aws

from docflow.adapters.dynamodb import DynamoRecordStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.ports import RecordStore
from docflow.records import DocumentRecord, ReviewDecision
from docflow.values import Status, utcnow
from tests.aws_fixtures import create_resources

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "aws"])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    if request.param == "local":
        yield SqliteRecordStore(tmp_path / "records.sqlite3")
    else:
        with mock_aws():
            create_resources()
            from tests.aws_fixtures import TABLE

            yield DynamoRecordStore(TABLE)


def _queued(doc_id: str, minutes: int, predicted: str = "memo", code: str = "LOW_CONFIDENCE") -> DocumentRecord:
    when = utcnow() - timedelta(minutes=minutes)
    return DocumentRecord(
        document_id=doc_id,
        status=Status.NEEDS_REVIEW,
        source=f"in/{doc_id}.png",
        predicted_class=predicted,
        confidence=0.4,
        scores={predicted: 0.4},
        model_version="v1",
        code=code,
        reason="why",
        created_at=when,
        updated_at=when,
    )


def _decision(record: DocumentRecord, label: str, seconds: int = 0) -> ReviewDecision:
    when = utcnow() + timedelta(seconds=seconds)
    return ReviewDecision(
        document_id=record.document_id,
        decision_id=f"{when.isoformat()}#abcd",
        label=label,
        reviewer="Ada",
        api_key_id="key-1",
        decided_at=when,
        predicted_class=record.predicted_class,
        confidence=record.confidence,
        model_version=record.model_version,
        previous_label=record.label,
        previous_status=record.status,
        previous_updated_at=record.updated_at,
        status=Status.REVIEWED if record.status is Status.NEEDS_REVIEW else record.status,
    )


def test_the_queue_lists_the_longest_waiting_first_with_filters_and_its_length(records: RecordStore) -> None:
    records.put_document(_queued("a", 30, "memo", "LOW_CONFIDENCE"))
    records.put_document(_queued("b", 50, "letter", "OUT_OF_SCOPE"))
    records.put_document(_queued("c", 40, "memo", "OUT_OF_SCOPE"))
    records.put_document(_queued("d", 10).model_copy(update={"status": Status.CLASSIFIED}))
    page, cursor = records.list_review_queue(limit=2)
    assert [r.document_id for r in page] == ["b", "c"] and cursor
    rest, end = records.list_review_queue(limit=2, cursor=cursor)
    assert [r.document_id for r in rest] == ["a"] and end is None
    assert records.count_review_queue() == 3
    assert [r.document_id for r in records.list_review_queue(predicted_class="memo")[0]] == ["c", "a"]
    assert [r.document_id for r in records.list_review_queue(code="OUT_OF_SCOPE")[0]] == ["b", "c"]
    assert [r.document_id for r in records.list_review_queue("memo", "OUT_OF_SCOPE")[0]] == ["c"]
    assert records.count_review_queue(predicted_class="memo") == 2
    assert records.count_review_queue("letter", "LOW_CONFIDENCE") == 0


def test_a_decision_settles_the_document_and_its_undo_puts_it_back_in_its_place(records: RecordStore) -> None:
    queued = _queued("a", 30)
    records.put_document(queued)
    records.put_document(_queued("b", 20))
    decision = _decision(queued, "letter")
    decided = records.decide(decision)
    # The document leaves the queue, labelled, and the decision is in its history beside the model's suggestion
    assert decided is not None and (decided.status, decided.label) == (Status.REVIEWED, "letter")
    assert decided.predicted_class == "memo" and decided.updated_at == decision.decided_at
    assert [r.document_id for r in records.list_review_queue()[0]] == ["b"]
    assert records.count_review_queue() == 1
    [kept] = records.list_decisions("a")
    assert (kept.label, kept.reviewer, kept.api_key_id, kept.predicted_class) == ("letter", "Ada", "key-1", "memo")
    # The same decision again (a stale read: the document is no longer NEEDS_REVIEW) writes nothing
    assert records.decide(_decision(queued, "memo", seconds=1)) is None
    assert len(records.list_decisions("a")) == 1
    # Undo: label and status as they were, back at its old place (first: it waited longest), decision kept
    undone = records.undo_decision(decision, utcnow())
    assert undone is not None and (undone.status, undone.label) == (Status.NEEDS_REVIEW, None)
    assert [r.document_id for r in records.list_review_queue()[0]] == ["a", "b"]
    [marked] = records.list_decisions("a")
    assert marked.undone_at is not None
    # A decision undone once cannot be undone again
    assert records.undo_decision(decision, utcnow()) is None


def test_a_correction_keeps_the_status_and_an_undo_after_a_newer_decision_is_refused(records: RecordStore) -> None:
    records.put_document(_queued("a", 30))
    first = _decision(_queued("a", 30), "letter")
    after_first = records.decide(first)
    assert after_first is not None
    # A correction of a decided document: the label changes, the status stays REVIEWED
    second = _decision(after_first, "memo", seconds=1)
    corrected = records.decide(second)
    assert corrected is not None and (corrected.status, corrected.label) == (Status.REVIEWED, "memo")
    # The first decision cannot be undone any more: the document is not as it left it
    assert records.undo_decision(first, utcnow()) is None
    assert [d.label for d in records.list_decisions("a")] == ["letter", "memo"]
    # A decision about an unknown document writes nothing
    assert records.decide(_decision(_queued("zz", 1), "memo")) is None
    assert records.list_decisions("zz") == []


def test_a_rescoring_write_never_overwrites_a_decision_made_meanwhile(records: RecordStore) -> None:
    queued = _queued("a", 30)
    records.put_document(queued)
    assert records.decide(_decision(queued, "letter")) is not None
    rescored = queued.model_copy(update={"status": Status.CLASSIFIED, "model_version": "v2"})
    assert records.put_document(rescored, keep_label=True, if_status=Status.NEEDS_REVIEW.value) is False
    on_file = records.get_document("a")
    assert on_file is not None and (on_file.status, on_file.label, on_file.model_version) == (
        Status.REVIEWED,
        "letter",
        "v1",
    )
    # Still queued: the write goes through, keeping a label on file
    records.put_document(_queued("b", 20))
    assert records.put_document(
        _queued("b", 20).model_copy(update={"status": Status.CLASSIFIED}), if_status=Status.NEEDS_REVIEW.value
    )
    assert records.get_document("b").status == Status.CLASSIFIED  # type: ignore[union-attr]
    # Nothing is inserted under a condition
    assert records.put_document(_queued("new", 1), if_status=Status.NEEDS_REVIEW.value) is False
    assert records.get_document("new") is None


def test_a_document_labelled_while_it_is_classified_is_settled_not_queued(
    records: RecordStore, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person's label set while the pipeline runs (through the API) is their decision: a document the model
    leaves NEEDS_REVIEW ends REVIEWED with that label, out of the queue. Unlabelled, it waits as before."""
    from docflow.adapters.files import LocalBlobStore
    from docflow.context import StepContext
    from docflow.pipeline.runner import Runner
    from docflow.pipeline.state import DocumentRef
    from docflow.samples import MEMO, text_pdf
    from docflow.settings import Settings
    from tests.decisions import decide

    settings = Settings(home=tmp_path, model_dir=tiny_model, review_threshold=1.0)  # the model is never sure
    ctx = StepContext(settings=settings, blobs=LocalBlobStore(tmp_path / "blobs"), records=records)

    def run(name: str, label_meanwhile: str | None) -> DocumentRecord:
        key = f"incoming/{name}.pdf"
        ctx.blobs.put(key, text_pdf([f"{MEMO}\n{name}"]))
        original = type(records).add_prediction

        def add_prediction(self: RecordStore, prediction: object) -> None:  # Classify, before its record write
            if label_meanwhile:
                assert decide(self, prediction.document_id, label_meanwhile) is not None  # type: ignore[attr-defined]
            original(self, prediction)  # type: ignore[arg-type]

        with monkeypatch.context() as patched:
            patched.setattr(type(records), "add_prediction", add_prediction)
            state = Runner(ctx).run(DocumentRef(key=key, source=key))
        assert state.status is Status.NEEDS_REVIEW and state.document_id
        record = records.get_document(state.document_id)
        assert record is not None
        return record

    labelled = run("labelled", "letter")
    assert (labelled.status, labelled.label) == (Status.REVIEWED, "letter")
    assert labelled.predicted_class is not None  # the model's suggestion is kept beside the decision
    waiting = run("waiting", None)
    assert (waiting.status, waiting.label) == (Status.NEEDS_REVIEW, None)
    assert [r.document_id for r in records.list_review_queue(limit=10)[0]] == [waiting.document_id]
    assert records.count_review_queue() == 1
