"""Lambda: the pipeline's first step. Accepts the S3 "Object Created" event that EventBridge hands the
state machine, or a pipeline state / document reference (API, tests, re-drives)."""

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from docflow.handlers._step import run_step
from docflow.observability import logger, metrics, tracer
from docflow.pipeline.state import DocumentRef, PipelineState
from docflow.pipeline.steps import validate_step


def parse_event(event: dict[str, Any]) -> PipelineState:
    if event.get("source") == "aws.s3" or "detail-type" in event:
        s3 = parse(event=event, model=S3EventNotificationEventBridgeModel)
        bucket, obj = s3.detail.bucket.name, s3.detail.object
        # S3 URL-encodes keys in its notifications ("my file.pdf" arrives as "my+file.pdf").
        key = unquote_plus(obj.key)
        return PipelineState(
            ref=DocumentRef(key=key, bucket=bucket, version_id=obj.version_id, source=f"s3://{bucket}/{key}")
        )
    try:
        return PipelineState.model_validate(event)
    except ValidationError:
        return PipelineState(ref=DocumentRef.model_validate(event))


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_step(validate_step, parse_event(event))
