"""Lambda: the pipeline's first step. Accepts the S3 "Object Created" event that EventBridge hands the
state machine (wrapped with the execution's id, the owner of its work: {"event": ..., "owner": ...}), or a
pipeline state / document reference (API, tests, re-drives)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from docflow.handlers._step import parse_event, run_step
from docflow.pipeline.steps import validate_step
from docflow.powertools import logger, metrics, tracer


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_step(validate_step, parse_event(event))
