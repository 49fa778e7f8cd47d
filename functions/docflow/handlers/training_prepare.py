"""Lambda: the training state machine's PrepareData step (docflow_training.loop.prepare_training_data)."""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from docflow.context import get_context
from docflow.handlers._training import loop_settings, model_bucket
from docflow.powertools import logger, tracer
from docflow_training.loop import PrepareRequest, prepare_training_data


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=PrepareRequest)
def handler(event: PrepareRequest, context: LambdaContext) -> dict[str, Any]:
    ctx = get_context()
    models, bucket = model_bucket()
    prepared = prepare_training_data(
        event, records=ctx.records, documents=ctx.blobs, models=models, bucket=bucket, settings=loop_settings()
    )
    return {"prepared": prepared.model_dump(mode="json")}
