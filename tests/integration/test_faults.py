"""The fault hook (DOCFLOW_FAULTS) through the embedded runner and through the Lambda handlers.

Transient faults are retried by the one retry policy and the document is classified; a permanent one
ends FAILED with its error and cause, and the uploaded bytes stay. The per-document fault counter lives in
the record store, so "N times" holds across invocations and processes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from docflow.context import StepContext, build_context, get_context
from docflow.faults import Fault, FaultPlan, counter_name, parse_faults
from docflow.pipeline.runner import Runner
from docflow.pipeline.state import DocumentRef
from docflow.samples import MEMO, text_pdf
from docflow.settings import Settings, get_settings
from docflow.values import Status
from tests.aws_fixtures import BUCKET, TABLE, create_resources, object_created
from tests.integration.test_handlers import FakeLambdaContext

pytestmark = pytest.mark.integration

MEMO_PDF = text_pdf([MEMO])
MEMO_ID = hashlib.sha256(MEMO_PDF).hexdigest()


def _context(monkeypatch: pytest.MonkeyPatch, faults: str) -> StepContext:
    monkeypatch.setenv("DOCFLOW_FAULTS", faults)
    get_settings.cache_clear()
    return build_context(get_settings())


def _run(ctx: StepContext, key: str = "incoming/memo.pdf", data: bytes = MEMO_PDF) -> tuple[Any, list[float]]:
    ctx.blobs.put(key, data)
    sleeps: list[float] = []
    state = Runner(ctx, sleep=sleeps.append).run(DocumentRef(key=key, source=key))
    return state, sleeps


# -- configuration ----------------------------------------------------------------------------------------


def test_fault_spec_parses_steps_kinds_counts_and_rates() -> None:
    faults = parse_faults("ExtractText=transient:2, Classify=permanent@0.01,Validate=transient@0.5")
    assert faults == (
        Fault(step="ExtractText", kind="transient", times=2),
        Fault(step="Classify", kind="permanent", rate=0.01),
        Fault(step="Validate", kind="transient", times=1, rate=0.5),
    )
    assert parse_faults("") == ()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Extract=transient", "step must be one of"),
        ("RecordFailure=permanent", "step must be one of"),
        ("Classify=flaky", "expected Step="),
        ("Classify=permanent:3", "permanent fault has no count"),
        ("Classify=transient:0", "count must be >= 1"),
        ("Classify=transient@1.5", "rate in (0, 1]"),
        ("Classify=transient,Classify=permanent", "named twice"),
    ],
)
def test_a_bad_fault_setting_stops_with_its_name(monkeypatch: pytest.MonkeyPatch, spec: str, message: str) -> None:
    monkeypatch.setenv("DOCFLOW_FAULTS", spec)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "faults" in str(info.value) and message in str(info.value)


def test_rate_selection_is_per_document_and_deterministic_by_seed() -> None:
    fault = Fault(step="Classify", kind="permanent", rate=0.05)
    keys = [f"doc-{i}" for i in range(20_000)]
    picked = {k for k in keys if FaultPlan(faults=(fault,), seed=1).selects(fault, k)}
    again = {k for k in keys if FaultPlan(faults=(fault,), seed=1).selects(fault, k)}
    other_seed = {k for k in keys if FaultPlan(faults=(fault,), seed=2).selects(fault, k)}
    assert picked == again
    assert picked != other_seed
    assert 0.04 < len(picked) / len(keys) < 0.06


# -- the counter in the record store ----------------------------------------------------------------------


def test_sqlite_counter_is_atomic_across_threads(tmp_path: Path) -> None:
    ctx = build_context(Settings(home=tmp_path))
    seen: list[int] = []

    def bump() -> None:
        for _ in range(50):
            seen.append(ctx.records.increment_counter("c"))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ctx.records.get_counter("c") == 200
    assert sorted(seen) == list(range(1, 201))  # every increment saw its own value
    assert ctx.records.get_counter("never") == 0


# -- the embedded runner ----------------------------------------------------------------------------------


def test_transient_faults_are_retried_and_the_document_is_classified(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(monkeypatch, "ExtractText=transient:2")
    state, sleeps = _run(ctx)
    assert state.status in (Status.CLASSIFIED, Status.NEEDS_REVIEW)
    assert len(sleeps) == 2  # two retries: three attempts
    assert ctx.records.get_counter(counter_name("ExtractText", MEMO_ID)) == 2
    record = ctx.records.get_document(MEMO_ID)
    assert record is not None and record.status == state.status
    assert len(ctx.records.list_predictions(MEMO_ID)) == 1


def test_more_transient_faults_than_retries_end_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(monkeypatch, "Classify=transient:4")  # the policy retries TransientError 3 times
    state, sleeps = _run(ctx)
    assert state.status == Status.FAILED
    assert len(sleeps) == 3
    record = ctx.records.get_document(MEMO_ID)
    assert record is not None and record.code == "TransientError"
    assert record.reason == "injected transient fault 4/4 in Classify (DOCFLOW_FAULTS)"


def test_permanent_fault_fails_with_error_and_cause_and_keeps_the_blob(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(monkeypatch, "Classify=permanent")
    state, sleeps = _run(ctx)
    assert state.status == Status.FAILED
    assert sleeps == []  # not retried
    record = ctx.records.get_document(MEMO_ID)
    assert record is not None and record.status == Status.FAILED
    assert record.code == "PermanentError"
    assert record.reason == "injected permanent fault in Classify (DOCFLOW_FAULTS)"
    assert ctx.records.list_predictions(MEMO_ID) == []
    assert ctx.blobs.get("incoming/memo.pdf") == MEMO_PDF  # the upload is kept for a re-drive
    assert ctx.records.get_counter(counter_name("Classify", MEMO_ID)) == 1


def test_a_fault_on_validate_is_keyed_by_the_blob_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before Validate has hashed the content, the document is known by its blob key.
    ctx = _context(monkeypatch, "Validate=transient:1")
    state, sleeps = _run(ctx, key="incoming/v.pdf")
    assert state.status in (Status.CLASSIFIED, Status.NEEDS_REVIEW) and len(sleeps) == 1
    assert ctx.records.get_counter(counter_name("Validate", "incoming/v.pdf")) == 1


def test_page_ranges_of_a_long_pdf_each_take_their_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCFLOW_LARGE_PDF_PAGES", "2")
    monkeypatch.setenv("DOCFLOW_PAGES_PER_CHUNK", "2")
    ctx = _context(monkeypatch, "ExtractPages=transient:1")
    pdf = text_pdf([f"{MEMO}\nPage {i}" for i in range(1, 6)])  # ranges 1-2, 3-4, 5-5
    state, sleeps = _run(ctx, data=pdf)
    assert state.status in (Status.CLASSIFIED, Status.NEEDS_REVIEW) and state.pages == 5
    assert len(sleeps) == 3
    doc = hashlib.sha256(pdf).hexdigest()
    assert [ctx.records.get_counter(counter_name("ExtractPages", doc, p)) for p in ("1-2", "3-4", "5-5")] == [1, 1, 1]


# -- the Lambda handlers (moto): the counter survives from one invocation to the next -----------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    with mock_aws():
        create_resources()
        yield boto3.client("s3", region_name="us-east-1")


def _fresh_container() -> None:
    """A new Lambda sandbox: nothing cached in the process survives."""
    get_settings.cache_clear()
    get_context.cache_clear()


def test_handlers_fail_transiently_n_times_across_invocations(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow.errors import TransientError
    from docflow.handlers import classify, extract_text, validate

    monkeypatch.setenv("DOCFLOW_FAULTS", "ExtractText=transient:2")
    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=MEMO_PDF)
    event = object_created("incoming/memo.pdf")
    ctx = FakeLambdaContext()
    _fresh_container()
    state = validate.handler(event, ctx)
    for attempt in (1, 2):
        _fresh_container()
        with pytest.raises(TransientError, match=f"injected transient fault {attempt}/2 in ExtractText"):
            extract_text.handler(state, ctx)
    _fresh_container()
    state = classify.handler(extract_text.handler(state, ctx), ctx)
    assert state["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    item = (
        boto3.resource("dynamodb", region_name="us-east-1")
        .Table(TABLE)
        .get_item(Key={"pk": f"COUNTER#{counter_name('ExtractText', MEMO_ID)}", "sk": "COUNTER"})["Item"]
    )
    assert item["n"] == 2
