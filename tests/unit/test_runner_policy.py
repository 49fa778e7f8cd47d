"""The embedded runner follows the one retry/catch policy the state machine uses."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from docflow.adapters.files import LocalBlobStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.context import StepContext
from docflow.errors import PermanentError, TransientError
from docflow.pipeline import policy, runner
from docflow.pipeline.state import DocumentRef, PipelineState
from docflow.settings import Settings
from docflow.values import Status

pytestmark = pytest.mark.unit


@pytest.fixture
def ctx(tmp_path: Path) -> StepContext:
    return StepContext(
        settings=Settings(home=tmp_path),
        blobs=LocalBlobStore(tmp_path / "blobs"),
        records=SqliteRecordStore(tmp_path / "records.sqlite3"),
    )


def _accept(state: PipelineState, ctx: StepContext) -> PipelineState:
    return state.model_copy(update={"document_id": "d" * 64, "status": Status.PROCESSING, "proceed": True})


def _classified(state: PipelineState, ctx: StepContext) -> PipelineState:
    return state.model_copy(update={"status": Status.CLASSIFIED})


def _flaky(times: int, exc: type[Exception]):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def step(state: PipelineState, ctx: StepContext) -> PipelineState:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc(f"boom {calls['n']}")
        return state

    return step, calls


def _patch(monkeypatch: pytest.MonkeyPatch, **steps: object) -> None:
    monkeypatch.setattr(runner, "validate_step", steps.get("validate", _accept))
    monkeypatch.setattr(runner, "extract_text_step", steps.get("extract", lambda s, c: s))
    monkeypatch.setattr(runner, "classify_step", steps.get("classify", _classified))


def test_transient_error_is_retried_then_succeeds(ctx: StepContext, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky, calls = _flaky(2, TransientError)
    _patch(monkeypatch, extract=flaky)
    sleeps: list[float] = []
    state = runner.Runner(ctx, sleep=sleeps.append, rng=random.Random(0)).run(DocumentRef(key="k", source="a.pdf"))
    assert state.status == Status.CLASSIFIED
    assert calls["n"] == 3
    rule = policy.retry_rule_for("TransientError")
    assert rule is not None and len(sleeps) == 2
    assert all(0 <= s <= rule.max_delay_seconds for s in sleeps)


def test_transient_error_past_max_attempts_is_caught_as_failed(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = policy.retry_rule_for("TransientError")
    assert rule is not None
    flaky, calls = _flaky(rule.max_attempts + 1, TransientError)
    _patch(monkeypatch, extract=flaky)
    state = runner.Runner(ctx, sleep=lambda s: None).run(DocumentRef(key="k", source="a.pdf"))
    assert calls["n"] == rule.max_attempts + 1
    assert state.status == Status.FAILED
    record = ctx.records.get_document("d" * 64)
    assert record is not None and record.status == Status.FAILED
    assert record.code == "TransientError"
    assert record.reason == f"boom {rule.max_attempts + 1}"


def test_permanent_error_is_not_retried_and_recorded(ctx: StepContext, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky, calls = _flaky(1, PermanentError)
    _patch(monkeypatch, classify=flaky)
    state = runner.Runner(ctx, sleep=lambda s: pytest.fail("must not sleep")).run(DocumentRef(key="k", source="a.pdf"))
    assert calls["n"] == 1
    assert state.status == Status.FAILED
    uploads = ctx.records.list_uploads("d" * 64)
    assert [(u.source, u.status) for u in uploads] == [("a.pdf", Status.FAILED)]


def test_failure_before_validation_is_still_recorded(ctx: StepContext, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the upload's bytes cannot even be read (no content hash to key the record by)
    def broken(state: PipelineState, c: StepContext) -> PipelineState:
        raise PermanentError("object 'k' not found")

    _patch(monkeypatch, validate=broken)
    state = runner.Runner(ctx).run(DocumentRef(key="k", source="gone.pdf"))
    # Then the upload still ends FAILED, keyed by its source
    assert state.status == Status.FAILED and state.document_id
    record = ctx.records.get_document(state.document_id)
    assert record is not None and record.reason == "object 'k' not found"


def test_backoff_grows_and_is_capped() -> None:
    rule = policy.RetryRule(
        errors=("X",), interval_seconds=1, max_attempts=10, backoff_rate=2, max_delay_seconds=5, jitter=False
    )
    assert [rule.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]
    jittered = policy.RetryRule(**{**rule.model_dump(), "jitter": True})
    assert all(0 <= jittered.delay(3, random.Random(i)) <= 4 for i in range(50))


def test_policy_names_the_projects_transient_error_and_lambda_service_errors() -> None:
    assert policy.retry_rule_for("TransientError") is not None
    assert policy.retry_rule_for("Lambda.TooManyRequestsException") is not None
    assert policy.retry_rule_for("PermanentError") is None
    assert policy.retry_rule_for("ValueError") is None
