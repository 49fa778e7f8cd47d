"""One contract, two implementations: the local stores and the AWS ones (under moto) behave alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
from botocore.exceptions import EndpointConnectionError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from docflow.adapters.dynamodb import DynamoRecordStore
from docflow.adapters.files import LocalBlobStore
from docflow.adapters.s3 import S3BlobStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.errors import ConfigurationError, TransientError
from docflow.ports import BlobNotFoundError, BlobStore, RecordStore
from docflow.records import DocumentRecord, PredictionRecord, UploadRecord
from docflow.values import Status, utcnow
from tests.aws_fixtures import BUCKET, TABLE, create_resources
from tests.decisions import decide

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "aws"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[BlobStore, RecordStore]]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs"), SqliteRecordStore(tmp_path / "records.sqlite3")
    else:
        with mock_aws():
            create_resources()
            yield S3BlobStore(BUCKET), DynamoRecordStore(TABLE)


def _doc(doc_id: str, status: Status = Status.PROCESSING, minutes: int = 0) -> DocumentRecord:
    when = utcnow() + timedelta(minutes=minutes)
    return DocumentRecord(
        document_id=doc_id, status=status, source=f"in/{doc_id}.pdf", created_at=when, updated_at=when
    )


def test_blob_round_trip(stores: tuple[BlobStore, RecordStore]) -> None:
    blobs, _ = stores
    # Given an object written under a nested key
    blobs.put("incoming/a/scan 1.png", b"\x89PNG data")
    # Then it reads back whole, with its size, and is listed under its prefix only
    assert blobs.get("incoming/a/scan 1.png") == b"\x89PNG data"
    assert blobs.size("incoming/a/scan 1.png") == 9
    assert b"".join(blobs.iter_chunks("incoming/a/scan 1.png", chunk_size=4)) == b"\x89PNG data"
    assert blobs.exists("incoming/a/scan 1.png")
    assert list(blobs.list("incoming/")) == ["incoming/a/scan 1.png"]
    assert list(blobs.list("results/")) == []


def test_missing_blob_is_a_clear_error(stores: tuple[BlobStore, RecordStore]) -> None:
    blobs, _ = stores
    assert not blobs.exists("nope")
    with pytest.raises(BlobNotFoundError):
        blobs.get("nope")
    with pytest.raises(BlobNotFoundError):
        blobs.size("nope")


def test_s3_reads_the_version_asked_for() -> None:
    with mock_aws():
        s3 = create_resources()["s3"]
        blobs = S3BlobStore(BUCKET)
        v1 = s3.put_object(Bucket=BUCKET, Key="incoming/a.pdf", Body=b"first")["VersionId"]
        s3.put_object(Bucket=BUCKET, Key="incoming/a.pdf", Body=b"second, longer")
        assert blobs.get("incoming/a.pdf") == b"second, longer"
        assert blobs.get("incoming/a.pdf", version_id=v1) == b"first"
        assert blobs.size("incoming/a.pdf", version_id=v1) == 5
        assert b"".join(blobs.iter_chunks("incoming/a.pdf", chunk_size=2, version_id=v1)) == b"first"
        s3.delete_object(Bucket=BUCKET, Key="incoming/a.pdf", VersionId=v1)
        for read in (blobs.get, blobs.size):
            with pytest.raises(BlobNotFoundError):
                read("incoming/a.pdf", version_id=v1)


def test_create_document_is_conditional(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    # Given a document created once
    assert records.create_document(_doc("d1")) is None
    # When the same content is created again (a duplicate, or the same event delivered twice)
    existing = records.create_document(_doc("d1", Status.CLASSIFIED))
    # Then nothing is overwritten and the first record comes back
    assert existing is not None and existing.status == Status.PROCESSING
    assert records.get_document("d1").status == Status.PROCESSING  # type: ignore[union-attr]


def test_put_document_replaces_and_floats_survive(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    records.put_document(_doc("d2"))
    done = _doc("d2", Status.CLASSIFIED).model_copy(
        update={"confidence": 0.8123, "scores": {"memo": 0.8123, "letter": 0.1877}, "timings": {"ocr": 1.5}}
    )
    records.put_document(done)
    got = records.get_document("d2")
    assert got is not None
    assert got.status == Status.CLASSIFIED
    assert got.confidence == pytest.approx(0.8123)
    assert got.scores == pytest.approx({"memo": 0.8123, "letter": 0.1877})
    assert records.get_document("absent") is None


def test_list_documents_by_status_paginates(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    for i in range(5):
        records.put_document(_doc(f"c{i}", Status.CLASSIFIED, minutes=i))
    records.put_document(_doc("r0", Status.REJECTED))
    page1, cursor = records.list_documents(status="CLASSIFIED", limit=3)
    assert [r.document_id for r in page1] == ["c4", "c3", "c2"]  # newest first
    assert cursor is not None
    page2, cursor2 = records.list_documents(status="CLASSIFIED", limit=3, cursor=cursor)
    assert [r.document_id for r in page2] == ["c1", "c0"]
    assert cursor2 is None or records.list_documents(status="CLASSIFIED", limit=3, cursor=cursor2)[0] == []
    rejected, _ = records.list_documents(status="REJECTED")
    assert [r.document_id for r in rejected] == ["r0"]


def test_list_documents_without_a_status_is_newest_first_across_statuses(
    stores: tuple[BlobStore, RecordStore],
) -> None:
    _, records = stores
    statuses = [Status.CLASSIFIED, Status.REJECTED, Status.PROCESSING, Status.NEEDS_REVIEW, Status.FAILED]
    for i in range(7):
        records.put_document(_doc(f"d{i}", statuses[i % len(statuses)], minutes=i))
    # Uploads and predictions share the table on AWS: they are not documents
    records.put_upload(UploadRecord(document_id="d6", source="in/d6.pdf", status=Status.CLASSIFIED))
    records.add_prediction(
        PredictionRecord(
            document_id="d6",
            predicted_class="memo",
            confidence=0.9,
            scores={"memo": 0.9},
            model_name="m",
            model_version="1",
        )
    )
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = records.list_documents(limit=3, cursor=cursor)
        seen += [r.document_id for r in page]
        pages += 1
        if cursor is None:
            break
    assert seen == [f"d{i}" for i in reversed(range(7))]  # every document once, newest first, no other items
    assert pages == 3

    # A document updated while a listing is paged moves above the cursor: never listed twice
    first, cursor = records.list_documents(limit=2)
    assert [r.document_id for r in first] == ["d6", "d5"]
    records.put_document(_doc("d6", Status.CLASSIFIED, minutes=30))
    rest, _ = records.list_documents(limit=10, cursor=cursor)
    assert [r.document_id for r in rest] == ["d4", "d3", "d2", "d1", "d0"]


def test_iter_documents_is_every_document_once(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    for i in range(5):
        records.put_document(_doc(f"d{i}", (Status.CLASSIFIED, Status.FAILED)[i % 2]))
    records.put_upload(UploadRecord(document_id="d0", source="in/d0.pdf", status=Status.CLASSIFIED))
    assert sorted(r.document_id for r in records.iter_documents()) == [f"d{i}" for i in range(5)]


def test_uploads_and_prediction_history(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    records.put_upload(UploadRecord(document_id="d3", source="a.pdf", status=Status.CLASSIFIED))
    records.put_upload(UploadRecord(document_id="d3", source="b.pdf", status=Status.DUPLICATE, duplicate_of="d3"))
    # The same upload recorded twice stays one upload
    records.put_upload(UploadRecord(document_id="d3", source="a.pdf", status=Status.CLASSIFIED))
    assert sorted((u.source, u.status) for u in records.list_uploads("d3")) == [
        ("a.pdf", Status.CLASSIFIED),
        ("b.pdf", Status.DUPLICATE),
    ]
    for version, cls in (("1", "memo"), ("2", "letter")):
        records.add_prediction(
            PredictionRecord(
                document_id="d3",
                predicted_class=cls,
                confidence=0.9,
                scores={cls: 0.9},
                model_name="docflow-classifier",
                model_version=version,
            )
        )
    history = records.list_predictions("d3")
    assert [(p.model_version, p.predicted_class) for p in history] == [("1", "memo"), ("2", "letter")]


def test_uploads_are_one_per_object_version_and_replace_the_versionless_placeholder(
    stores: tuple[BlobStore, RecordStore],
) -> None:
    _, records = stores
    src = "s3://docs/incoming/a.pdf"
    # The API's record, written before the bytes (and so before their version) exist
    records.put_upload(UploadRecord(document_id="d4", source=src, status=Status.RECEIVED))
    # The pipeline's record of the version S3 gave the put replaces it
    records.put_upload(UploadRecord(document_id="d4", source=src, version_id="v1", status=Status.CLASSIFIED))
    assert [(u.version_id, u.status) for u in records.list_uploads("d4")] == [("v1", Status.CLASSIFIED)]
    # Another version of the same key is another upload; the same version again stays one
    records.put_upload(UploadRecord(document_id="d4", source=src, version_id="v2", status=Status.DUPLICATE))
    records.put_upload(UploadRecord(document_id="d4", source=src, version_id="v2", status=Status.DUPLICATE))
    assert sorted((u.object_id, u.status) for u in records.list_uploads("d4")) == [
        (f"{src}?versionId=v1", Status.CLASSIFIED),
        (f"{src}?versionId=v2", Status.DUPLICATE),
    ]


def test_create_upload_records_an_object_once_and_takes_over_only_open_records(
    stores: tuple[BlobStore, RecordStore],
) -> None:
    _, records = stores
    src = "s3://docs/incoming/b.pdf"

    def upload(status: Status, version: str | None = "v1") -> UploadRecord:
        return UploadRecord(document_id="d5", source=src, version_id=version, status=status)

    records.put_upload(upload(Status.RECEIVED, version=None))  # the API's placeholder
    assert records.create_upload(upload(Status.FAILED)) is None  # a failed first try: written
    assert records.create_upload(upload(Status.DUPLICATE)) is None  # a retry's outcome replaces a failure
    on_file = records.create_upload(upload(Status.REJECTED))  # a second delivery's: refused
    assert on_file is not None and on_file.status == Status.DUPLICATE
    assert records.create_upload(upload(Status.FAILED)) is not None  # a failure never overwrites an outcome
    assert [(u.version_id, u.status) for u in records.list_uploads("d5")] == [("v1", Status.DUPLICATE)]
    # A versionless record that holds an outcome is history: a versioned record leaves it alone
    records.put_upload(UploadRecord(document_id="d6", source=src, status=Status.CLASSIFIED))
    records.put_upload(UploadRecord(document_id="d6", source=src, version_id="v9", status=Status.DUPLICATE))
    assert sorted(str(u.status) for u in records.list_uploads("d6")) == ["CLASSIFIED", "DUPLICATE"]


def test_a_label_set_while_the_pipeline_runs_survives_its_write(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    records.put_document(_doc("l1", Status.PROCESSING, minutes=-5).model_copy(update={"reason": "was here"}))
    # Given the pipeline has read the record (no label yet) and is classifying
    seen = records.get_document("l1")
    assert seen is not None and seen.label is None
    # When a user labels the document meanwhile
    when = utcnow()
    labelled = decide(records, "l1", "email", when)
    # Then only the label and the update time change, atomically (a document being processed keeps its
    # status), and the record as written comes back
    assert labelled is not None and labelled.label == "email" and labelled.status == Status.PROCESSING
    assert labelled.updated_at == when and labelled.created_at == seen.created_at and labelled.reason == "was here"
    assert records.get_document("l1") == labelled
    # And it is listed under its status at its new update time
    window = records.list_documents_updated(
        [Status.PROCESSING], when - timedelta(seconds=1), when + timedelta(seconds=1)
    )
    assert [r.document_id for r in window] == ["l1"]
    # When the pipeline writes its outcome built from what it read before the label
    outcome = seen.model_copy(
        update={"status": Status.CLASSIFIED, "predicted_class": "memo", "reason": None, "updated_at": utcnow()}
    )
    records.put_document(outcome, keep_label=True)
    # Then its outcome is on file, with the user's label kept (and a field it cleared gone)
    stored = records.get_document("l1")
    assert stored == outcome.model_copy(update={"label": "email"})
    listed, _ = records.list_documents(status=Status.CLASSIFIED)
    assert [r.label for r in listed] == ["email"]
    # A record's own label is written where none is on file; a plain put replaces the label too
    records.put_document(_doc("l2").model_copy(update={"label": "letter"}), keep_label=True)
    assert records.get_document("l2").label == "letter"  # type: ignore[union-attr]
    records.put_document(outcome)
    assert records.get_document("l1").label is None  # type: ignore[union-attr]
    # Labelling an unknown document writes nothing
    assert decide(records, "nope", "email") is None
    assert records.get_document("nope") is None


def test_restart_document_takes_over_a_failed_record_only(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    records.put_document(_doc("d7", Status.FAILED))
    assert records.restart_document(_doc("d7", Status.PROCESSING)) is True
    assert records.restart_document(_doc("d7", Status.PROCESSING)) is False  # a second delivery: too late
    assert records.restart_document(_doc("d8", Status.PROCESSING)) is False  # nothing to restart
    record = records.get_document("d7")
    assert record is not None and record.status == Status.PROCESSING
    assert records.get_document("d8") is None


def test_restart_document_keeps_a_label_set_since_the_record_was_read(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    # Given a FAILED document, read by a retry that will restart it
    failed = _doc("r1", Status.FAILED).model_copy(update={"reason": "ocr timed out"})
    records.put_document(failed)
    seen = records.get_document("r1")
    assert seen is not None and seen.label is None
    # When a user labels it before the restart is written
    decide(records, "r1", "memo")
    restarted = seen.model_copy(update={"status": Status.PROCESSING, "reason": None, "updated_at": utcnow()})
    assert records.restart_document(restarted) is True
    # Then the restart is on file (a field it cleared gone) with the user's label kept
    assert records.get_document("r1") == restarted.model_copy(update={"label": "memo"})
    # And a restart's own label is written where none is on file
    records.put_document(_doc("r2", Status.FAILED))
    assert records.restart_document(_doc("r2").model_copy(update={"label": "letter"})) is True
    assert records.get_document("r2").label == "letter"  # type: ignore[union-attr]


def test_restart_document_takes_over_an_orphan_only_when_stale(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    now = utcnow()
    records.put_document(_doc("o1", Status.PROCESSING, minutes=-10))  # its run died 10 minutes ago
    records.put_document(_doc("o2", Status.PROCESSING))  # its run is going
    records.put_document(_doc("o3", Status.CLASSIFIED, minutes=-10))  # finished: never taken over
    stale = now - timedelta(minutes=5)
    assert records.restart_document(_doc("o1", Status.PROCESSING)) is False  # no lease given: FAILED only
    assert records.restart_document(_doc("o1", Status.PROCESSING), stale_before=stale) is True
    assert records.restart_document(_doc("o1", Status.PROCESSING), stale_before=stale) is False  # taken now
    assert records.restart_document(_doc("o2", Status.PROCESSING), stale_before=stale) is False
    assert records.restart_document(_doc("o3", Status.PROCESSING), stale_before=stale) is False
    assert [records.get_document(d).status for d in ("o2", "o3")] == [Status.PROCESSING, Status.CLASSIFIED]  # type: ignore[union-attr]


def test_documents_updated_in_a_window(stores: tuple[BlobStore, RecordStore]) -> None:
    _, records = stores
    now = utcnow()
    # Given classified and review documents before, inside and after a window, and a rejected one inside it
    for doc_id, status, minutes in (
        ("old", Status.CLASSIFIED, -90),
        ("w1", Status.CLASSIFIED, -50),
        ("w2", Status.NEEDS_REVIEW, -30),
        ("w3", Status.CLASSIFIED, -10),
        ("rej", Status.REJECTED, -20),
        ("late", Status.CLASSIFIED, 5),
    ):
        when = now + timedelta(minutes=minutes)
        records.put_document(
            DocumentRecord(
                document_id=doc_id, status=status, source=f"{doc_id}.pdf", created_at=when, updated_at=when
            ).model_copy(update={"predicted_class": "memo", "confidence": 0.75, "model_version": "3"})
        )
    # When the last hour is listed for the two statuses that carry a prediction
    window = records.list_documents_updated(["CLASSIFIED", "NEEDS_REVIEW"], now - timedelta(hours=1), now)
    # Then exactly the documents updated inside [since, until) come back, oldest first, with their prediction
    assert [r.document_id for r in window] == ["w1", "w2", "w3"]
    assert all(r.predicted_class == "memo" and r.confidence == 0.75 and r.model_version == "3" for r in window)
    # The bounds are half-open and a status filter of nothing lists nothing
    w1_time = window[0].updated_at
    assert [r.document_id for r in records.list_documents_updated(["CLASSIFIED"], w1_time, w1_time)] == []
    assert [r.document_id for r in records.list_documents_updated(["CLASSIFIED"], w1_time, now)] == ["w1", "w3"]
    assert records.list_documents_updated([], now - timedelta(hours=2), now) == []


def test_local_blob_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    for key in ("../evil", "a/../../evil", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            blobs.put(key, b"x")
    assert not (tmp_path / "evil").exists()


def _write_uploads(args: tuple[str, int]) -> int:
    path, worker = args
    store = SqliteRecordStore(Path(path))
    for i in range(20):
        store.put_upload(UploadRecord(document_id=f"d{worker}", source=f"s{i}", status=Status.CLASSIFIED))
    return worker


def test_sqlite_store_opened_by_many_processes_at_once(tmp_path: Path) -> None:
    # Given several worker processes creating the same new database together (docflow process --workers)
    import multiprocessing

    path = str(tmp_path / "fresh.sqlite3")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        assert sorted(pool.map(_write_uploads, [(path, w) for w in range(8)])) == list(range(8))
    # Then nobody failed on the schema or journal-mode switch, and every write landed
    assert SqliteRecordStore(Path(path)).count_uploads_by_status() == {"CLASSIFIED": 160}


# -- S3 faults: what botocore raises (its Stubber answers as S3 would) becomes the pipeline's error contract ---


class _BrokenStream:
    """A response body that gives `first`, then fails as urllib3 does when the connection breaks."""

    def __init__(self, first: bytes, error: Exception) -> None:
        self.first, self.error = first, error

    def read(self, amt: int | None = None) -> bytes:
        if self.first:
            chunk, self.first = self.first, b""
            return chunk
        raise self.error

    def close(self) -> None:
        pass


@pytest.fixture
def stubbed_s3() -> Iterator[tuple[S3BlobStore, Stubber]]:
    blobs = S3BlobStore(BUCKET)
    with Stubber(blobs._s3) as stubber:
        yield blobs, stubber
        stubber.assert_no_pending_responses()


def _fail_before_the_request(blobs: S3BlobStore, stubber: Stubber, operation: str) -> None:
    """The request never gets an answer: botocore raises a BotoCoreError (here with its retries spent)."""

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url=f"https://{BUCKET}.s3.amazonaws.com")

    stubber.deactivate()  # its answers are used up; nothing leaves the machine: the call fails first
    blobs._s3.meta.events.register(f"before-call.s3.{operation}", unreachable)


@pytest.mark.parametrize(
    "broken",
    [
        urllib3.exceptions.ReadTimeoutError(None, "", "Read timed out."),  # becomes botocore's ReadTimeoutError
        urllib3.exceptions.ProtocolError("Connection broken: reset by peer"),  # becomes ResponseStreamingError
    ],
    ids=["read-timeout", "connection-reset"],
)
def test_s3_a_body_that_breaks_while_streaming_is_transient(
    stubbed_s3: tuple[S3BlobStore, Stubber], broken: Exception
) -> None:
    blobs, stubber = stubbed_s3
    body = StreamingBody(_BrokenStream(b"first chunk", broken), content_length=1000)
    stubber.add_response("get_object", {"Body": body, "ContentLength": 1000}, {"Bucket": BUCKET, "Key": "k"})
    read: list[bytes] = []
    with pytest.raises(TransientError, match=r"get s3://.*/k \(reading the body\)"):
        for chunk in blobs.iter_chunks("k", chunk_size=11):
            read.append(chunk)
    assert read == [b"first chunk"]


def test_s3_streaming_a_missing_or_throttled_object(stubbed_s3: tuple[S3BlobStore, Stubber]) -> None:
    blobs, stubber = stubbed_s3
    stubber.add_client_error("get_object", "NoSuchVersion", http_status_code=404)
    stubber.add_client_error("get_object", "SlowDown", http_status_code=503)
    with pytest.raises(BlobNotFoundError):
        list(blobs.iter_chunks("k", version_id="v1"))
    with pytest.raises(TransientError, match="SlowDown"):
        list(blobs.iter_chunks("k"))
    _fail_before_the_request(blobs, stubber, "GetObject")
    with pytest.raises(TransientError, match="Could not connect"):
        list(blobs.iter_chunks("k"))


def test_s3_head_faults_are_transient_and_a_missing_key_is_not_found(stubbed_s3: tuple[S3BlobStore, Stubber]) -> None:
    blobs, stubber = stubbed_s3
    # A HEAD's error has no body: S3's code is the bare HTTP status.
    stubber.add_client_error("head_object", "404", http_status_code=404)
    stubber.add_client_error("head_object", "404", http_status_code=404)
    stubber.add_client_error("head_object", "503", "Service Unavailable", http_status_code=503)
    stubber.add_client_error("head_object", "500", "Internal Server Error", http_status_code=500)
    with pytest.raises(BlobNotFoundError):
        blobs.size("k")
    assert blobs.exists("k") is False
    with pytest.raises(TransientError, match="head s3://"):
        blobs.size("k")
    with pytest.raises(TransientError, match="head s3://"):
        blobs.exists("k")
    _fail_before_the_request(blobs, stubber, "HeadObject")
    for head in (blobs.size, blobs.exists):
        with pytest.raises(TransientError, match="Could not connect"):
            head("k")


def test_s3_listing_faults_are_translated_on_any_page(stubbed_s3: tuple[S3BlobStore, Stubber]) -> None:
    blobs, stubber = stubbed_s3
    first_page = {"Contents": [{"Key": "text/a.json"}], "IsTruncated": True, "NextContinuationToken": "t"}
    stubber.add_response("list_objects_v2", first_page, {"Bucket": BUCKET, "Prefix": "text/"})
    stubber.add_client_error("list_objects_v2", "SlowDown", http_status_code=503)
    stubber.add_client_error("list_objects_v2", "AccessDenied", http_status_code=403)
    listed: list[str] = []
    with pytest.raises(TransientError, match=r"list s3://.*/text/: SlowDown"):
        for key in blobs.list("text/"):
            listed.append(key)
    assert listed == ["text/a.json"]
    with pytest.raises(ConfigurationError, match="AccessDenied"):
        list(blobs.list("text/"))
    _fail_before_the_request(blobs, stubber, "ListObjectsV2")
    with pytest.raises(TransientError, match="Could not connect"):
        list(blobs.list("text/"))
