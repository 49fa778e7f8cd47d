"""The CloudWatch embedded metric format each pipeline handler prints (powertools, on stdout), read back as
CloudWatch would: metric names, units, exact dimension sets and values, per handler invocation (moto)."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from docflow.samples import LETTER, MEMO, render_page, text_pdf
from tests.aws_fixtures import BUCKET, TABLE, create_resources, object_created

pytestmark = pytest.mark.integration


# The metrics contract (issue #7): each metric's exact dimension set (service is powertools' default).
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "DocumentsUploaded": ("Count", frozenset({"service"})),
    "DocumentsProcessed": ("Count", frozenset({"service", "status"})),
    "OcrSecondsPerPage": ("Seconds", frozenset({"service"})),
    "OcrConfidence": ("None", frozenset({"service"})),
    "PredictionConfidence": ("None", frozenset({"service", "model_version"})),
    "Predictions": ("Count", frozenset({"service", "document_class", "model_version"})),
    "PipelineSeconds": ("Seconds", frozenset({"service", "status"})),
    "StepSeconds": ("Seconds", frozenset({"service", "step"})),
    "ColdStart": ("Count", frozenset({"service", "function_name"})),
}


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    dimensions: dict[str, str]
    values: list[float]


def emf_metrics(stdout: str) -> list[Metric]:
    """Every metric in the EMF blobs of `stdout`, with the dimension values its blob carries."""
    found = []
    for line in stdout.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "Docflow"
            assert len(directive["Dimensions"]) == 1, directive  # one dimension set per metric
            names = directive["Dimensions"][0]
            for metric in directive["Metrics"]:
                raw = blob[metric["Name"]]
                found.append(
                    Metric(
                        name=metric["Name"],
                        unit=metric["Unit"],
                        dimensions={d: blob[d] for d in names},
                        values=[float(v) for v in (raw if isinstance(raw, list) else [raw])],
                    )
                )
    for m in found:
        unit, dims = CONTRACT[m.name]
        assert (m.unit, frozenset(m.dimensions)) == (unit, dims), m
        assert m.dimensions["service"] == "docflow"
    return [m for m in found if m.name != "ColdStart"]


def named(metrics: list[Metric], name: str) -> list[Metric]:
    return [m for m in metrics if m.name == name]


@dataclass
class FakeLambdaContext:
    function_name: str = "docflow-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:docflow-test"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    with mock_aws():
        create_resources()
        yield boto3.client("s3", region_name="us-east-1")


class Invoker:
    """Calls one handler and returns its output with the EMF metrics it printed; fails on powertools'
    "No application metrics to publish" warning (an invocation that publishes an empty set)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, handler: Any, event: dict[str, Any]) -> tuple[dict[str, Any], list[Metric]]:
        self.capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = handler(event, FakeLambdaContext())
        empty = [w for w in caught if "No application metrics" in str(w.message)]
        assert not empty, empty
        return out, emf_metrics(self.capsys.readouterr().out)


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str]) -> Invoker:
    return Invoker(capsys)


def _event(key: str) -> dict[str, Any]:
    return object_created(key)


def _step(metrics: list[Metric], step: str) -> None:
    [seconds] = named(metrics, "StepSeconds")
    assert seconds.dimensions["step"] == step
    assert len(seconds.values) == 1 and 0 <= seconds.values[0] < 120


def test_text_pdf_through_validate_extract_classify(aws: Any, invoke: Invoker) -> None:
    from docflow.handlers import classify, extract_text, validate

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=text_pdf([MEMO]))

    state, metrics = invoke(validate.handler, _event("incoming/memo.pdf"))
    # Validate: a new upload, counted once, and its wall time
    assert {m.name for m in metrics} == {"DocumentsUploaded", "StepSeconds"}
    assert named(metrics, "DocumentsUploaded")[0].values == [1.0]
    _step(metrics, "Validate")

    state, metrics = invoke(extract_text.handler, state)
    # ExtractText on a PDF text layer: no OCR ran, so no OCR signal
    assert state["text_source"] == "pdf_text"
    assert {m.name for m in metrics} == {"StepSeconds"}
    _step(metrics, "ExtractText")

    state, metrics = invoke(classify.handler, state)
    prediction = state["prediction"]
    assert state["status"] == "CLASSIFIED" and prediction["predicted_class"] == "memo"
    assert {m.name for m in metrics} == {
        "Predictions",
        "PredictionConfidence",
        "DocumentsProcessed",
        "PipelineSeconds",
        "StepSeconds",
    }
    [predictions] = named(metrics, "Predictions")
    assert predictions.dimensions == {
        "service": "docflow",
        "document_class": "memo",
        "model_version": prediction["model_version"],
    }
    assert predictions.values == [1.0]
    [confidence] = named(metrics, "PredictionConfidence")
    assert confidence.dimensions["model_version"] == prediction["model_version"]
    assert confidence.values == [pytest.approx(prediction["confidence"])]
    [processed] = named(metrics, "DocumentsProcessed")
    assert processed.dimensions["status"] == "CLASSIFIED" and processed.values == [1.0]
    [pipeline] = named(metrics, "PipelineSeconds")
    assert pipeline.dimensions["status"] == "CLASSIFIED"
    assert 0 <= pipeline.values[0] < 120
    _step(metrics, "Classify")


def test_scan_emits_ocr_seconds_and_confidence(aws: Any, invoke: Invoker) -> None:
    from docflow.handlers import extract_text, validate

    buf = io.BytesIO()
    render_page(LETTER).save(buf, "PNG")
    aws.put_object(Bucket=BUCKET, Key="incoming/letter.png", Body=buf.getvalue())
    state, _ = invoke(validate.handler, _event("incoming/letter.png"))

    state, metrics = invoke(extract_text.handler, state)

    assert state["text_source"] == "ocr"
    assert {m.name for m in metrics} == {"OcrSecondsPerPage", "OcrConfidence", "StepSeconds"}
    [per_page] = named(metrics, "OcrSecondsPerPage")
    assert 0 < per_page.values[0] < 120
    [confidence] = named(metrics, "OcrConfidence")
    assert confidence.values == [pytest.approx(state["ocr_confidence"])]
    assert 50 < confidence.values[0] <= 100  # a clean render OCRs well


def test_rejected_duplicate_and_redelivery(aws: Any, invoke: Invoker) -> None:
    from docflow.handlers import record_outcome, validate

    pdf = text_pdf([MEMO])
    aws.put_object(Bucket=BUCKET, Key="incoming/page.pdf", Body=b"<html><body>not a pdf</body></html>")
    aws.put_object(Bucket=BUCKET, Key="incoming/a.pdf", Body=pdf)
    aws.put_object(Bucket=BUCKET, Key="incoming/b.pdf", Body=pdf)

    # A rejected upload: counted as uploaded and as processed (REJECTED) where its record is created, once
    state, metrics = invoke(validate.handler, _event("incoming/page.pdf"))
    assert state["status"] == "REJECTED"
    assert {m.name for m in metrics} == {"StepSeconds"}
    state, metrics = invoke(record_outcome.handler, state)
    assert named(metrics, "DocumentsUploaded")[0].values == [1.0]
    [processed] = named(metrics, "DocumentsProcessed")
    assert processed.dimensions["status"] == "REJECTED" and processed.values == [1.0]
    assert named(metrics, "PipelineSeconds")[0].dimensions["status"] == "REJECTED"
    _step(metrics, "RecordOutcome")
    # Its event delivered again: a replay, counted neither as uploaded nor as processed
    state, metrics = invoke(validate.handler, _event("incoming/page.pdf"))
    assert state["replay"] is True and {m.name for m in metrics} == {"StepSeconds"}
    state, metrics = invoke(record_outcome.handler, state)
    assert {m.name for m in metrics} == {"StepSeconds"}

    # The original is validated; its copy under another name ends DUPLICATE
    invoke(validate.handler, _event("incoming/a.pdf"))
    b_event = _event("incoming/b.pdf")
    state, metrics = invoke(validate.handler, b_event)
    assert state["status"] == "DUPLICATE" and {m.name for m in metrics} == {"StepSeconds"}
    state, metrics = invoke(record_outcome.handler, state)
    assert named(metrics, "DocumentsUploaded")[0].values == [1.0]
    assert [m.dimensions["status"] for m in named(metrics, "DocumentsProcessed")] == ["DUPLICATE"]
    # The copy's event delivered again: the same, once
    state, metrics = invoke(validate.handler, b_event)
    assert state["replay"] is True and state["status"] == "DUPLICATE" and {m.name for m in metrics} == {"StepSeconds"}
    state, metrics = invoke(record_outcome.handler, state)
    assert {m.name for m in metrics} == {"StepSeconds"}

    # The original's event delivered again: a replay, nothing counted twice
    state, metrics = invoke(validate.handler, _event("incoming/a.pdf"))
    assert state["replay"] is True
    assert {m.name for m in metrics} == {"StepSeconds"}
    state, metrics = invoke(record_outcome.handler, state)
    assert {m.name for m in metrics} == {"StepSeconds"}


def test_record_failure_counts_failed(aws: Any, invoke: Invoker) -> None:
    from docflow.handlers import record_failure, validate

    aws.put_object(Bucket=BUCKET, Key="incoming/memo.pdf", Body=text_pdf([MEMO]))
    state, _ = invoke(validate.handler, _event("incoming/memo.pdf"))
    state["error"] = {"Error": "OcrTimeoutError", "Cause": json.dumps({"errorMessage": "too slow"})}

    out, metrics = invoke(record_failure.handler, state)

    assert out["status"] == "FAILED"
    assert {m.name for m in metrics} == {"DocumentsProcessed", "PipelineSeconds", "StepSeconds"}
    [processed] = named(metrics, "DocumentsProcessed")
    assert processed.dimensions["status"] == "FAILED" and processed.values == [1.0]
    # Seconds since its document was created at Validate
    assert 0 <= named(metrics, "PipelineSeconds")[0].values[0] < 60
    _step(metrics, "RecordFailure")


def test_long_scanned_pdf_through_the_map(aws: Any, invoke: Invoker, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow.handlers import classify, extract_pages, merge_text, validate

    monkeypatch.setenv("DOCFLOW_LARGE_PDF_PAGES", "1")
    monkeypatch.setenv("DOCFLOW_PAGES_PER_CHUNK", "1")
    pages = [render_page(LETTER), render_page(MEMO)]
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", resolution=200.0, save_all=True, append_images=pages[1:])
    aws.put_object(Bucket=BUCKET, Key="incoming/scans.pdf", Body=buf.getvalue())
    state, _ = invoke(validate.handler, _event("incoming/scans.pdf"))
    assert len(state["page_ranges"]) == 2

    parts = []
    for page_range in state["page_ranges"]:
        part, metrics = invoke(extract_pages.handler, {"state": state, **page_range})
        parts.append(part)
        # One page range: its OCR seconds per page, its wall time; confidence waits for the merge
        assert {m.name for m in metrics} == {"OcrSecondsPerPage", "StepSeconds"}
        _step(metrics, "ExtractPages")

    state, metrics = invoke(merge_text.handler, {**state, "parts": parts})
    assert {m.name for m in metrics} == {"OcrConfidence", "StepSeconds"}
    assert named(metrics, "OcrConfidence")[0].values == [pytest.approx(state["ocr_confidence"])]
    _step(metrics, "MergeText")

    state, metrics = invoke(classify.handler, state)
    assert named(metrics, "DocumentsProcessed")[0].dimensions["status"] == state["status"]
