"""What every pipeline-step handler does: parse the state, call one step, return the new state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from docflow.context import StepContext, get_context
from docflow.observability import logger, metrics
from docflow.pipeline.state import PipelineState


def run_step(step: Callable[[PipelineState, StepContext], PipelineState], state: PipelineState) -> dict[str, Any]:
    if state.document_id:
        logger.set_correlation_id(state.document_id)
    result = step(state, get_context())
    if result.document_id:
        logger.set_correlation_id(result.document_id)
    if result.status.terminal and not result.replay:
        metrics.add_dimension(name="status", value=str(result.status))
        metrics.add_metric(name="DocumentsProcessed", unit=MetricUnit.Count, value=1)
    logger.info("step done", extra={"status": str(result.status), "timings": result.timings})
    return result.model_dump(mode="json")
