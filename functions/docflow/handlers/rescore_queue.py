"""Lambda: the training state machine's RescoreQueue step, after Publish (docflow.pipeline.rescore.rescore_queue).

The review queue scored again by the champion just published, within this invocation's time: the state machine
loops back here, with the cursor this invocation returned, until the queue is done."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from docflow.context import StepContext, get_context, resolve_model_dir
from docflow.model_source import FixedModelSource
from docflow.pipeline.rescore import rescore_queue
from docflow.powertools import logger, tracer

# Left of the invocation's time when rescoring stops between documents: for the one in flight and the reply.
SAFETY_MARGIN_S = 20.0


class RescoreProgress(BaseModel):
    """What the previous invocation returned ($.rescore): where to go on from, and how many ran so far."""

    cursor: str | None = None
    invocations: int = Field(default=0, ge=0)


class RescoreRequest(BaseModel):
    """The training state machine's state: only ``rescore`` matters, absent on the first invocation."""

    rescore: RescoreProgress | None = None


def _champion_now() -> StepContext:
    """The process's stores, with the champion the pointer names now, pinned for this invocation: a warm
    container may still hold the one it resolved before Publish moved the pointer (model_refresh_seconds)."""
    ctx = get_context()
    return StepContext(
        settings=ctx.settings,
        blobs=ctx.blobs,
        records=ctx.records,
        model_source=FixedModelSource(resolve_model_dir(ctx.settings)),
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=RescoreRequest)
def handler(event: RescoreRequest, context: LambdaContext) -> dict[str, Any]:
    budget_s = context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_S
    deadline = time.monotonic() + max(budget_s, 0.0)
    previous = event.rescore or RescoreProgress()
    report = rescore_queue(_champion_now(), cursor=previous.cursor, deadline=deadline)
    result = {
        "done": report.done,
        "cursor": report.cursor,
        "scanned": report.scanned,
        "settled": report.settled,
        "still_queued": report.still_queued,
        "current": report.current,
        "skipped": report.skipped,
        "model_version": report.model_version,
        "invocations": previous.invocations + 1,
    }
    logger.info("review queue rescored" if report.done else "review queue rescored in part", extra=result)
    return result
