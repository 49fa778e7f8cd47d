"""What every pipeline-step handler does: parse the state, call one step, return the new state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel
from pydantic import ValidationError

from docflow import telemetry
from docflow.context import StepContext, get_context
from docflow.errors import PermanentError
from docflow.pipeline.state import DocumentRef, PipelineState, StepError
from docflow.powertools import logger

# The state machine's name of each step function: the StepSeconds dimension.
STEP_NAMES = {
    "validate_step": "Validate",
    "extract_text_step": "ExtractText",
    "extract_pages_step": "ExtractPages",
    "merge_text_step": "MergeText",
    "classify_step": "Classify",
    "record_outcome_step": "RecordOutcome",
    "record_failure_step": "RecordFailure",
}


def parse_event(event: dict[str, Any]) -> PipelineState:
    """A step's input as a PipelineState: the S3 "Object Created" event EventBridge starts an execution with
    (Validate's input, and RecordFailure's when Validate failed: the Catch adds $.error to that same event),
    a pipeline state, or a bare document reference (API, tests, re-drives). The state machine hands Validate
    and RecordFailure that input wrapped as {"event": <input>, "owner": <execution id>}: the run that owns
    the work (PipelineState.owner)."""
    if set(event) == {"event", "owner"} and isinstance(event["event"], dict):
        owner = event["owner"]
        if owner is not None and not isinstance(owner, str):
            raise PermanentError(f"the step input's owner must be a string, not {type(owner).__name__}")
        return parse_event(event["event"]).model_copy(update={"owner": owner})
    if event.get("source") == "aws.s3" or "detail-type" in event:
        s3 = parse(event=event, model=S3EventNotificationEventBridgeModel)
        bucket, obj = s3.detail.bucket.name, s3.detail.object
        # S3 URL-encodes keys in its notifications ("my file.pdf" arrives as "my+file.pdf").
        key = unquote_plus(obj.key)
        error = event.get("error")
        return PipelineState(
            ref=DocumentRef(key=key, bucket=bucket, version_id=obj.version_id, source=f"s3://{bucket}/{key}"),
            error=StepError.model_validate(error) if error else None,
        )
    try:
        return PipelineState.model_validate(event)
    except ValidationError:
        return PipelineState(ref=DocumentRef.model_validate(event))


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
