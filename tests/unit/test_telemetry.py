"""The signals module: the Prometheus exposition under the contract's names, the EMF blobs, worker
recording and replay, and the API's request durations by route template."""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from docflow import telemetry
from docflow.api.metrics import RequestMetricsMiddleware, install_metrics_endpoint


@pytest.fixture
def sink() -> Iterator[telemetry.PrometheusSink]:
    prom = telemetry.PrometheusSink()
    previous = telemetry.configure(prom)
    yield prom
    telemetry.configure(previous)


def samples(sink: telemetry.PrometheusSink) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = sink.exposition()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(sink: telemetry.PrometheusSink, name: str, **labels: str) -> float | None:
    return samples(sink).get((name, frozenset(labels.items())))


def test_signals_appear_under_the_contract_names(sink: telemetry.PrometheusSink) -> None:
    telemetry.document_uploaded()
    telemetry.document_uploaded()
    telemetry.document_processed("CLASSIFIED", 2.0)
    telemetry.document_processed("REJECTED", None)
    telemetry.ocr_page_seconds(3.0, 2)
    telemetry.ocr_confidence(87.5)
    telemetry.prediction("memo", 0.93, "v1")
    telemetry.model_metrics("v1", {"accuracy": 0.85, "macro_f1": 0.8})
    telemetry.api_request("/documents/{document_id}", "GET", 200, 0.02)
    telemetry.drift_score("class_distribution", 0.31)

    assert value(sink, "documents_uploaded_total") == 2
    assert value(sink, "documents_processed_total", status="CLASSIFIED") == 1
    assert value(sink, "documents_processed_total", status="REJECTED") == 1
    assert value(sink, "pipeline_seconds_count", status="CLASSIFIED") == 1
    assert value(sink, "pipeline_seconds_sum", status="CLASSIFIED") == 2.0
    assert value(sink, "pipeline_seconds_count", status="REJECTED") is None  # no time given: no observation
    assert value(sink, "ocr_processing_seconds_sum") == 1.5  # per page
    assert value(sink, "ocr_processing_seconds_bucket", le="2.0") == 1
    assert value(sink, "ocr_processing_seconds_bucket", le="1.0") == 0
    assert value(sink, "ocr_confidence_score_sum") == 87.5
    assert value(sink, "predictions_total", **{"class": "memo", "model_version": "v1"}) == 1
    assert value(sink, "prediction_confidence_score_count", model_version="v1") == 1
    assert value(sink, "prediction_confidence_score_bucket", model_version="v1", le="0.95") == 1
    assert value(sink, "prediction_confidence_score_bucket", model_version="v1", le="0.9") == 0
    assert value(sink, "model_accuracy", model_version="v1") == 0.85
    endpoint = {"endpoint": "/documents/{document_id}", "method": "GET", "status": "200"}
    assert value(sink, "api_request_duration_seconds_count", **endpoint) == 1
    assert value(sink, "drift_score", signal="class_distribution") == 0.31
    # StepSeconds is CloudWatch's alone
    assert not any(name.startswith("step_seconds") for name, _ in samples(sink))


def test_model_without_accuracy_sets_no_gauge(sink: telemetry.PrometheusSink) -> None:
    telemetry.model_metrics("v2", None)
    telemetry.model_metrics("v3", {"macro_f1": 0.7})
    assert not any(name == "model_accuracy" for name, _ in samples(sink))


def test_recorded_signals_reach_the_sink_only_when_replayed(sink: telemetry.PrometheusSink) -> None:
    with telemetry.recording() as captured:
        telemetry.document_processed("FAILED", 1.0)
        telemetry.prediction("letter", 0.4, "v1")
    assert value(sink, "documents_processed_total", status="FAILED") is None
    # What a worker process hands back: plain data that crosses a process boundary as is
    assert pickle.loads(pickle.dumps(captured)) == captured
    assert captured[0] == telemetry.Emission("documents_processed", 1.0, (("status", "FAILED"),))
    assert [e.signal for e in captured] == [
        "documents_processed",
        "pipeline_seconds",
        "predictions",
        "prediction_confidence_score",
    ]

    telemetry.replay(captured)
    telemetry.replay(captured)
    assert value(sink, "documents_processed_total", status="FAILED") == 2
    assert value(sink, "predictions_total", **{"class": "letter", "model_version": "v1"}) == 2


def test_recording_is_per_thread(sink: telemetry.PrometheusSink) -> None:
    inside = threading.Event()
    release = threading.Event()

    def worker() -> None:
        with telemetry.recording():
            telemetry.document_uploaded()
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    telemetry.document_uploaded()  # another thread (the server's event loop) while the worker records
    release.set()
    thread.join(5)
    assert value(sink, "documents_uploaded_total") == 1


def test_emf_sink_gives_each_metric_its_own_dimension_set(capsys: pytest.CaptureFixture[str]) -> None:
    from aws_lambda_powertools import Metrics

    metrics = Metrics(service="docflow", namespace="Docflow")
    previous = telemetry.configure(telemetry.EmfSink(metrics, namespace="Docflow", service="docflow"))
    try:
        telemetry.prediction("memo", 0.9, "abc123")
        telemetry.document_processed("NEEDS_REVIEW", 4.0)
        telemetry.api_request("/health", "GET", 200, 0.01)  # Prometheus only: no EMF
        telemetry.model_accuracy("abc123", 0.8)  # Prometheus only
        telemetry.step_seconds("Classify", 0.5)
        immediate = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        metrics.flush_metrics()
        flushed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        telemetry.configure(previous)

    def directive(blob: dict) -> tuple[str, str, list[str]]:  # type: ignore[type-arg]
        [d] = blob["_aws"]["CloudWatchMetrics"]
        [m] = d["Metrics"]
        [dims] = d["Dimensions"]
        return m["Name"], m["Unit"], sorted(dims)

    assert [directive(b) for b in immediate] == [
        ("Predictions", "Count", ["document_class", "model_version", "service"]),
        ("PredictionConfidence", "None", ["model_version", "service"]),
        ("DocumentsProcessed", "Count", ["service", "status"]),
        ("PipelineSeconds", "Seconds", ["service", "status"]),
    ]
    assert immediate[0]["document_class"] == "memo" and immediate[0]["model_version"] == "abc123"
    assert immediate[0]["Predictions"] in (1.0, [1.0])
    assert immediate[3]["status"] == "NEEDS_REVIEW"
    # StepSeconds waits in the handler's metric set, flushed at the end of the invocation
    assert [directive(b) for b in flushed] == [("StepSeconds", "Seconds", ["service", "step"])]
    assert flushed[0]["step"] == "Classify"


def _app(sink: telemetry.PrometheusSink) -> TestClient:
    app = FastAPI()

    @app.get("/documents/{document_id}")
    def get_document(document_id: str) -> dict[str, str]:
        return {"document_id": document_id}

    @app.post("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    install_metrics_endpoint(app, sink)
    app.add_middleware(RequestMetricsMiddleware)
    return TestClient(app, raise_server_exceptions=False)


def test_api_durations_are_labelled_by_route_template(sink: telemetry.PrometheusSink) -> None:
    client = _app(sink)
    for doc in ("a" * 64, "b" * 64, "c" * 64):
        assert client.get(f"/documents/{doc}").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    assert client.post("/boom").status_code == 500

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = {
        (s.labels["endpoint"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name == "api_request_duration_seconds_count"
    }
    # /metrics is counted once its answer has gone out: not in its own body
    assert got == {
        ("/documents/{document_id}", "GET", "200"): 3,
        ("unmatched", "GET", "404"): 1,
        ("/boom", "POST", "500"): 1,
    }
