"""The pipeline's signals (the metrics contract of issue #7), and where they go.

Steps, handlers and the API call the signal functions below (`document_processed`, `prediction`, …); they
know nothing of the sink. A process installs one sink with `configure`:

- `EmfSink` in Lambda handlers: CloudWatch embedded metric format through powertools, namespace "Docflow",
  dimension service=docflow on every metric. Each dimensioned metric is its own `single_metric` blob, so it
  carries exactly its dimension set; `StepSeconds` goes into the handler's `metrics` set, which
  `log_metrics` flushes at the end of the invocation (so no invocation publishes an empty set).
- `PrometheusSink` in `docflow serve` and the CLI's local runs: prometheus_client metrics in a registry
  of its own, under the seed's names (`documents_processed_total{status}`, …).
- nothing configured: signals are dropped (library use, unit tests of steps).

Work done in another process (the CLI's and the server's worker pools) is captured with `recording()` and
handed back with the result; the parent `replay`s it into its own sink, so counts are exact.

Lazy imports: each sink imports its library where it uses it (powertools' metrics in `EmfSink`,
prometheus_client in `PrometheusSink`): every process imports this module, and prometheus_client is on no
Lambda layer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics
    from prometheus_client import CollectorRegistry


class Kind(StrEnum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"


@dataclass(frozen=True)
class Signal:
    """One signal of the contract, as CloudWatch and as Prometheus see it.

    `labels` are the Prometheus label names the signal function passes; `emf_dimensions` maps those that are
    CloudWatch dimensions to the dimension's name (e.g. class → document_class).
    """

    key: str
    help: str
    kind: Kind
    labels: tuple[str, ...] = ()
    prom_name: str | None = None  # None: not a Prometheus metric
    emf_name: str | None = None  # None: not a CloudWatch metric
    emf_unit: str = "None"  # powertools MetricUnit value: Count, Seconds, None
    emf_dimensions: tuple[tuple[str, str], ...] = ()
    buckets: tuple[float, ...] = field(default=())


_CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

DOCUMENTS_UPLOADED = Signal(
    "documents_uploaded",
    "Uploads that entered the pipeline (each upload once; redeliveries not counted).",
    Kind.COUNTER,
    prom_name="documents_uploaded",
    emf_name="DocumentsUploaded",
    emf_unit="Count",
)
DOCUMENTS_PROCESSED = Signal(
    "documents_processed",
    "Uploads that reached a terminal status, by status.",
    Kind.COUNTER,
    labels=("status",),
    prom_name="documents_processed",
    emf_name="DocumentsProcessed",
    emf_unit="Count",
    emf_dimensions=(("status", "status"),),
)
OCR_SECONDS = Signal(
    "ocr_processing_seconds",
    "OCR seconds per page, one value per document (or page range of a long PDF) that was OCRed.",
    Kind.HISTOGRAM,
    prom_name="ocr_processing_seconds",
    emf_name="OcrSecondsPerPage",
    emf_unit="Seconds",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0),
)
OCR_CONFIDENCE = Signal(
    "ocr_confidence_score",
    "Mean OCR word confidence (0-100) of a document that was OCRed.",
    Kind.HISTOGRAM,
    prom_name="ocr_confidence_score",
    emf_name="OcrConfidence",
    buckets=(10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0),
)
PREDICTION_CONFIDENCE = Signal(
    "prediction_confidence_score",
    "Confidence (0-1) of the predicted class, by model version.",
    Kind.HISTOGRAM,
    labels=("model_version",),
    prom_name="prediction_confidence_score",
    emf_name="PredictionConfidence",
    emf_dimensions=(("model_version", "model_version"),),
    buckets=_CONFIDENCE_BUCKETS,
)
PREDICTIONS = Signal(
    "predictions",
    "Predictions made, by predicted class and model version.",
    Kind.COUNTER,
    labels=("class", "model_version"),
    prom_name="predictions",
    emf_name="Predictions",
    emf_unit="Count",
    emf_dimensions=(("class", "document_class"), ("model_version", "model_version")),
)
PIPELINE_SECONDS = Signal(
    "pipeline_seconds",
    "Seconds from a document's creation to its terminal status, by status.",
    Kind.HISTOGRAM,
    labels=("status",),
    prom_name="pipeline_seconds",
    emf_name="PipelineSeconds",
    emf_unit="Seconds",
    emf_dimensions=(("status", "status"),),
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
)
STEP_SECONDS = Signal(
    "step_seconds",
    "Wall time of one pipeline step (Validate, ExtractText, …).",
    Kind.HISTOGRAM,
    labels=("step",),
    emf_name="StepSeconds",
    emf_unit="Seconds",
    emf_dimensions=(("step", "step"),),
)
MODEL_ACCURACY = Signal(
    "model_accuracy",
    "Held-out accuracy of the loaded model (its metrics.json), by model version.",
    Kind.GAUGE,
    labels=("model_version",),
    prom_name="model_accuracy",
)
API_REQUEST_SECONDS = Signal(
    "api_request_duration_seconds",
    "API request duration, by route template, method and response status.",
    Kind.HISTOGRAM,
    labels=("endpoint", "method", "status"),
    prom_name="api_request_duration_seconds",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
DRIFT_SCORE = Signal(
    "drift_score",
    "Population stability index of a recent window against the model's baseline, by signal.",
    Kind.GAUGE,
    labels=("signal",),
    prom_name="drift_score",
    emf_name="DriftScore",
    emf_dimensions=(("signal", "signal"),),
)

SIGNALS: dict[str, Signal] = {
    s.key: s
    for s in (
        DOCUMENTS_UPLOADED,
        DOCUMENTS_PROCESSED,
        OCR_SECONDS,
        OCR_CONFIDENCE,
        PREDICTION_CONFIDENCE,
        PREDICTIONS,
        PIPELINE_SECONDS,
        STEP_SECONDS,
        MODEL_ACCURACY,
        API_REQUEST_SECONDS,
        DRIFT_SCORE,
    )
}


class Emission(NamedTuple):
    """One signal value: what a worker process hands back to its parent (plain data, picklable)."""

    signal: str  # Signal.key
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class Sink(Protocol):
    def emit(self, signal: Signal, value: float, labels: Mapping[str, str]) -> None: ...


class NullSink:
    """Drops every signal (nothing configured)."""

    def emit(self, signal: Signal, value: float, labels: Mapping[str, str]) -> None:
        return None


class EmfSink:
    """CloudWatch embedded metric format on stdout, through powertools."""

    def __init__(self, metrics: Metrics, namespace: str, service: str) -> None:
        self.metrics = metrics
        self.namespace = namespace
        self.service = service

    def emit(self, signal: Signal, value: float, labels: Mapping[str, str]) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        if signal.emf_name is None:
            return
        unit = MetricUnit(signal.emf_unit)
        dimensions = {dim: str(labels[label]) for label, dim in signal.emf_dimensions}
        if signal is STEP_SECONDS:
            # The handler's own metric, flushed by log_metrics: one step per invocation, so the set's
            # dimensions are exactly {service, step}, and no invocation publishes an empty set.
            for name, dim_value in dimensions.items():
                self.metrics.add_dimension(name=name, value=dim_value)
            self.metrics.add_metric(name=signal.emf_name, unit=unit, value=value)
            return
        with single_metric(
            name=signal.emf_name,
            unit=unit,
            value=value,
            namespace=self.namespace,
            default_dimensions={"service": self.service},
        ) as metric:
            for name, dim_value in dimensions.items():
                metric.add_dimension(name=name, value=dim_value)


class PrometheusSink:
    """The contract's Prometheus metrics (or only the ``signals`` given), in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None, signals: Iterable[Signal] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        for signal in SIGNALS.values() if signals is None else signals:
            if signal.prom_name is None:
                continue
            kwargs = {"labelnames": signal.labels, "registry": self.registry}
            if signal.kind is Kind.COUNTER:
                self._metrics[signal.key] = Counter(signal.prom_name, signal.help, **kwargs)  # type: ignore[arg-type]
            elif signal.kind is Kind.GAUGE:
                self._metrics[signal.key] = Gauge(signal.prom_name, signal.help, **kwargs)  # type: ignore[arg-type]
            else:
                self._metrics[signal.key] = Histogram(
                    signal.prom_name,
                    signal.help,
                    buckets=signal.buckets or Histogram.DEFAULT_BUCKETS,
                    **kwargs,  # type: ignore[arg-type]
                )

    def emit(self, signal: Signal, value: float, labels: Mapping[str, str]) -> None:
        from prometheus_client import Counter, Gauge

        metric = self._metrics.get(signal.key)
        if metric is None:
            return
        child = metric.labels(**{name: str(labels[name]) for name in signal.labels}) if signal.labels else metric
        if isinstance(metric, Counter):
            child.inc(value)  # type: ignore[union-attr]
        elif isinstance(metric, Gauge):
            child.set(value)  # type: ignore[union-attr]
        else:
            child.observe(value)  # type: ignore[union-attr]

    def exposition(self) -> tuple[bytes, str]:
        """The registry in the text exposition format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def write_textfile(self, path: Path) -> Path:
        """Write the registry for node_exporter's textfile collector (atomically: a temp file, then rename)."""
        from prometheus_client import write_to_textfile

        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)
        return path


_sink: Sink = NullSink()
_recording: ContextVar[list[Emission] | None] = ContextVar("docflow_telemetry_recording", default=None)


def configure(sink: Sink) -> Sink:
    """Install the process's sink; return the previous one."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def current() -> Sink:
    return _sink


@contextmanager
def recording() -> Iterator[list[Emission]]:
    """Capture this context's signals (not the process's other threads') instead of emitting them."""
    captured: list[Emission] = []
    token = _recording.set(captured)
    try:
        yield captured
    finally:
        _recording.reset(token)


def replay(emissions: Sequence[Emission]) -> None:
    """Emit signals captured elsewhere (a worker process) into this context's sink."""
    for emission in emissions:
        _emit(SIGNALS[emission.signal], emission.value, dict(emission.labels))


def _emit(signal: Signal, value: float, labels: Mapping[str, str] | None = None) -> None:
    labels = labels or {}
    captured = _recording.get()
    if captured is not None:
        captured.append(Emission(signal.key, float(value), tuple((k, str(v)) for k, v in labels.items())))
        return
    _sink.emit(signal, float(value), labels)


# -- the signals ------------------------------------------------------------------------------------------


def document_uploaded() -> None:
    """An upload entered the pipeline (not a redelivery of one already processed)."""
    _emit(DOCUMENTS_UPLOADED, 1)


def document_processed(status: str, pipeline_seconds: float | None) -> None:
    """An upload reached its terminal status; `pipeline_seconds` since its document was created."""
    _emit(DOCUMENTS_PROCESSED, 1, {"status": str(status)})
    if pipeline_seconds is not None:
        _emit(PIPELINE_SECONDS, max(pipeline_seconds, 0.0), {"status": str(status)})


def ocr_page_seconds(seconds: float, pages: int) -> None:
    """OCR of `pages` pages took `seconds` in all (one document, or one page range)."""
    if pages > 0:
        _emit(OCR_SECONDS, seconds / pages)


def ocr_confidence(mean_confidence: float) -> None:
    """Mean word confidence (0-100) of a document's OCRed pages."""
    _emit(OCR_CONFIDENCE, mean_confidence)


def prediction(predicted_class: str, confidence: float, model_version: str) -> None:
    """The model named a document's class."""
    _emit(PREDICTIONS, 1, {"class": predicted_class, "model_version": model_version})
    _emit(PREDICTION_CONFIDENCE, confidence, {"model_version": model_version})


def step_seconds(step: str, seconds: float) -> None:
    _emit(STEP_SECONDS, seconds, {"step": step})


@contextmanager
def timed_step(step: str) -> Iterator[None]:
    """Emit StepSeconds for the block's wall time, whether it returns or raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        step_seconds(step, time.perf_counter() - started)


def model_accuracy(model_version: str, accuracy: float) -> None:
    """The loaded model's held-out accuracy (from its metrics.json)."""
    _emit(MODEL_ACCURACY, accuracy, {"model_version": model_version})


def model_metrics(model_version: str, metrics: Mapping[str, object] | None) -> None:
    """model_accuracy from a model's metrics.json (its held-out evaluation), where it has an accuracy."""
    accuracy = (metrics or {}).get("accuracy")
    if isinstance(accuracy, int | float) and not isinstance(accuracy, bool):
        model_accuracy(model_version, float(accuracy))


def api_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """One API request; `endpoint` is the route template (/documents/{document_id}), never the raw path."""
    _emit(API_REQUEST_SECONDS, seconds, {"endpoint": endpoint, "method": method, "status": str(status)})


def drift_score(signal: str, value: float) -> None:
    """A drift job's population stability index for one signal (class_distribution | prediction_confidence)."""
    _emit(DRIFT_SCORE, value, {"signal": signal})
