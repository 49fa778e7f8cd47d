"""Lambda: the scheduled drift job. The served model's baseline against the last hours of predictions;
one DriftScore (EMF, dimension signal) per signal, which the drift alarms watch."""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from docflow import telemetry
from docflow.context import get_context, resolve_model_dir
from docflow.domain.drift import BaselineMissingError, check_drift
from docflow.powertools import NAMESPACE, SERVICE, logger, metrics, tracer

telemetry.configure(telemetry.EmfSink(metrics, NAMESPACE, SERVICE))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=EventBridgeModel)
def handler(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    ctx = get_context()
    settings = ctx.settings
    model_dir = resolve_model_dir(settings)
    try:
        report = check_drift(
            ctx.records,
            model_dir,
            now=event.time,  # the scheduled time: a retried invocation scores the same window
            window_hours=settings.drift_window_hours,
            threshold=settings.drift_threshold,
            min_predictions=settings.drift_min_predictions,
        )
    except BaselineMissingError as exc:
        # No score is published, so the drift alarms stay quiet; the log says why.
        logger.error("drift not measured", extra={"reason": str(exc)})
        return {"verdict": "no_baseline", "reason": str(exc)}
    for signal in report.signals:
        if signal.psi is not None:
            telemetry.drift_score(str(signal.signal), signal.psi)
    logger.info(
        "drift measured",
        extra={
            "verdict": report.verdict,
            "model_version": report.model_version,
            "n_predictions": report.n_predictions,
            "scores": {str(s.signal): s.psi for s in report.signals},
        },
    )
    return report.model_dump(mode="json")
