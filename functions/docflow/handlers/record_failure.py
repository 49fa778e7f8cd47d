"""Lambda: the pipeline's record failure step (every Catch's target). Its input is the failed step's input
with $.error: a pipeline state, or the S3 event itself when Validate failed."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from docflow.handlers._step import parse_event, run_step
from docflow.pipeline.steps import record_failure_step
from docflow.powertools import logger, metrics, tracer


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_step(record_failure_step, parse_event(event))
