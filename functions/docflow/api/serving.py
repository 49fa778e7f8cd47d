"""The model behind the API: the champion loaded once per process (an unloadable one is a 503), text
classified now, the champion's description, and liveness.

Heavy libraries (onnxruntime, Pillow, pdfium, Tesseract) are imported where they are used, so the API's
Lambda cold start pays only for what a request needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from docflow import telemetry
from docflow.api.errors import ApiError
from docflow.api.schemas import (
    ClassMetrics,
    HealthResponse,
    ModelInfo,
    ModelMetrics,
    PredictionResponse,
    ScanHeadInfo,
    StoresHealth,
)
from docflow.context import StepContext
from docflow.errors import DocflowError
from docflow.powertools import logger
from docflow.values import Prediction

if TYPE_CHECKING:
    from docflow.domain.classifier import TextClassifier


# -- the model ----------------------------------------------------------------------------------------------


def classifier(ctx: StepContext) -> TextClassifier:
    """The champion, loaded once per process; an unloadable model is a 503, not a crash."""
    try:
        return ctx.classifier()
    except (OSError, ValueError, DocflowError) as exc:  # ModelNotFoundError, ModelIncompatibleError, config
        logger.error("classifier unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        raise ApiError(503, "model_unavailable", "the classifier model is not available on this server") from exc


def is_confident(prediction: Prediction, model: TextClassifier, ctx: StepContext) -> bool:
    # The pipeline's own rule: below the review threshold (the settings', else the predicting model's) a
    # document NEEDS_REVIEW.
    return model.review(prediction, ctx.settings.review_threshold) is None


def prediction_response(prediction: Prediction, is_confident: bool, all_scores: bool) -> dict[str, Any]:
    return {
        "success": True,
        "predicted_class": prediction.predicted_class,
        "confidence_score": prediction.confidence,
        "is_confident": is_confident,
        "model_name": prediction.model_name,
        "model_version": prediction.model_version,
        "all_scores": prediction.scores if all_scores else None,
        "processing_time": round(prediction.seconds, 6),
    }


def predict_text(ctx: StepContext, text: str, return_all_scores: bool) -> PredictionResponse:
    model = classifier(ctx)
    prediction = model.predict(text)
    telemetry.prediction(prediction.predicted_class, prediction.confidence, prediction.model_version)
    return PredictionResponse(
        **prediction_response(prediction, is_confident(prediction, model, ctx), return_all_scores)
    )


def model_info(ctx: StepContext) -> ModelInfo:
    model = classifier(ctx)
    try:
        raw = model.metrics
    except ValueError:  # an unreadable metrics.json does not stop the model from serving
        raw = None
    metrics = None
    if isinstance(raw, dict):
        per_class = {
            name: ClassMetrics.model_validate(values)
            for name, values in (raw.get("per_class") or {}).items()
            if isinstance(values, dict)
        }
        metrics = ModelMetrics.model_validate({**raw, "per_class": per_class})
    head = model.scan_head
    scan_head = None
    if head is not None:
        extra = head.spec.model_extra or {}
        scan_head = ScanHeadInfo(
            review_threshold=ctx.settings.review_threshold
            if ctx.settings.review_threshold is not None
            else head.review_threshold,
            uncalibrated=list(head.spec.uncalibrated),
            fitted_on_scans=(extra.get("fitted_on") or {}).get("scans"),
            cross_validated=extra.get("cross_validated"),
        )
    return ModelInfo(
        model_name=model.name,
        model_version=model.version,
        classes=list(model.labels),
        review_threshold=model.review_threshold(ctx.settings.review_threshold),
        created_at=model.config.created_at,
        metrics=metrics,
        scan_head=scan_head,
    )


def health(ctx: StepContext) -> HealthResponse:
    """Liveness, the model version loaded, and whether each store answers. Says nothing more (no auth)."""
    model = None
    try:
        model = ctx.classifier()
    except Exception:  # reported as model_loaded=false; the reason is in the log
        logger.exception("health: classifier not loadable")
    records_ok = _reachable(lambda: ctx.records.get_document("0" * 64))
    blobs_ok = _reachable(lambda: ctx.blobs.exists("health/ping"))
    ok = model is not None and records_ok and blobs_ok
    return HealthResponse(
        status="ok" if ok else "degraded",
        backend=ctx.settings.backend,
        model_loaded=model is not None,
        model_name=model.name if model else None,
        model_version=model.version if model else None,
        stores=StoresHealth(records=records_ok, blobs=blobs_ok),
    )


def _reachable(probe: Any) -> bool:
    try:
        probe()
        return True
    except Exception:
        logger.exception("health: store unreachable")
        return False
