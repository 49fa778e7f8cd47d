"""What every pipeline-step handler does: parse the state, call one step, return the new state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from docflow import telemetry
from docflow.context import StepContext, get_context
from docflow.observability import logger
from docflow.pipeline.state import PipelineState

# The state machine's name of each step function: the StepSeconds dimension.
STEP_NAMES = {
    "validate_step": "Validate",
    "extract_step": "ExtractText",
    "extract_pages_step": "ExtractPages",
    "merge_text_step": "MergeText",
    "classify_step": "Classify",
    "record_outcome_step": "RecordOutcome",
    "record_failure_step": "RecordFailure",
}


def run_step(step: Callable[[PipelineState, StepContext], PipelineState], state: PipelineState) -> dict[str, Any]:
    if state.document_id:
        logger.set_correlation_id(state.document_id)
    # The step itself emits the signals it knows (DocumentsProcessed, Predictions, …); this its wall time.
    with telemetry.timed_step(STEP_NAMES[step.__name__]):
        result = step(state, get_context())
    if result.document_id:
        logger.set_correlation_id(result.document_id)
    logger.info("step done", extra={"status": str(result.status), "timings": result.timings})
    return result.model_dump(mode="json")
