"""Lambda: the training state machine's Publish step (docflow_training.loop.publish_candidate)."""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from docflow.handlers._training import loop_settings, model_bucket, scratch
from docflow.powertools import logger, tracer
from docflow_training.loop import LoopState, publish_candidate


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=LoopState)
def handler(event: LoopState, context: LambdaContext) -> dict[str, Any]:
    models, bucket = model_bucket()
    with scratch() as work:
        return publish_candidate(event, models=models, bucket=bucket, settings=loop_settings(), work=work)
