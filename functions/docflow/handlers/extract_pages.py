"""Lambda: one page range of a long PDF (an iteration of the pipeline's Map)."""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from docflow import telemetry
from docflow.context import get_context
from docflow.pipeline.state import PageRangeTask
from docflow.pipeline.steps import extract_pages_step
from docflow.powertools import logger, metrics, tracer


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=PageRangeTask)
def handler(event: PageRangeTask, context: LambdaContext) -> dict[str, Any]:
    if event.state.document_id:
        logger.set_correlation_id(event.state.document_id)
    with telemetry.timed_step("ExtractPages"):
        part = extract_pages_step(event, get_context())
    return part.model_dump(mode="json")
