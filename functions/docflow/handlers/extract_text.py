"""Lambda: the pipeline's extract text step."""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from docflow.handlers._step import run_step
from docflow.pipeline.state import PipelineState
from docflow.pipeline.steps import extract_text_step
from docflow.powertools import logger, metrics, tracer


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=PipelineState)
def handler(event: PipelineState, context: LambdaContext) -> dict[str, Any]:
    return run_step(extract_text_step, event)
