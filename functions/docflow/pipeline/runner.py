"""The embedded orchestrator: the state machine's flow and its retry/catch policy, in-process.

It walks the very flow (pipeline/flow.py) and policy (pipeline/policy.py) the Step Functions definition in
infra_cdk is built from, so a document takes the same path on a laptop as on AWS.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from docflow import telemetry
from docflow.context import StepContext
from docflow.pipeline import flow, policy
from docflow.pipeline.state import DocumentRef, PageRangeTask, PipelineState, StepError
from docflow.pipeline.steps import (
    classify_step,
    extract_pages_step,
    extract_text_step,
    merge_text_step,
    record_failure_step,
    record_outcome_step,
    validate_step,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def steps() -> dict[str, Callable[[Any, StepContext], Any]]:
    """Each task's step (flow.Task.step) → the function it runs; the Lambda of the same name wraps the same one.
    Read when called, so that a test may replace a step on this module."""
    return {
        "Validate": validate_step,
        "RecordOutcome": record_outcome_step,
        "ExtractText": extract_text_step,
        "ExtractPages": extract_pages_step,
        "MergeText": merge_text_step,
        "Classify": classify_step,
        "RecordFailure": record_failure_step,
    }


def holds(check: flow.Check, value: object) -> bool:
    """A Choice's check on a state field, as Step Functions evaluates it."""
    if check is flow.Check.IS_TRUE:
        return value is True
    if check is flow.Check.HAS_FIRST_ITEM:
        return isinstance(value, list) and len(value) > 0
    raise ValueError(f"unknown check {check}")


class Runner:
    def __init__(
        self,
        ctx: StepContext,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.ctx = ctx
        self._sleep = sleep
        self._rng = rng or random.Random()

    def _invoke(self, name: str, step: Callable[[T, StepContext], R], payload: T) -> R:
        """One task state: run, and on a retryable error wait and run again, as Step Functions' Retry."""
        attempts: dict[str, int] = {}
        while True:
            try:
                with telemetry.timed_step(name):  # each attempt, as each retry is its own invocation on AWS
                    return step(payload, self.ctx)
            except Exception as exc:
                error_name = type(exc).__name__
                rule = policy.retry_rule_for(error_name)
                n = attempts.get(error_name, 0) + 1
                if rule is None or n > rule.max_attempts:
                    raise
                attempts[error_name] = n
                delay = rule.delay(n, self._rng)
                log.warning(
                    "%s failed with %s (%s); retry %d/%d in %.1fs",
                    name,
                    error_name,
                    exc,
                    n,
                    rule.max_attempts,
                    delay,
                )
                self._sleep(delay)

    def run(self, ref: DocumentRef, languages: str | None = None, owner: str | None = None) -> PipelineState:
        """``owner``: the delivery this run is; given again when the same delivery is run again after the
        process running it died, so that the document's unfinished record is taken for its own work.

        The state carries its owner from the start, so the tasks flow.py marks ``owner_input`` need no more."""
        state = PipelineState(ref=ref, languages=languages, owner=owner or uuid.uuid4().hex)
        step_for = steps()
        name = flow.START
        while True:
            node = flow.BY_NAME[name]
            if isinstance(node, flow.Succeed | flow.Fail):
                return state
            if isinstance(node, flow.Choice):
                name = node.then if holds(node.check, getattr(state, node.field)) else node.otherwise
                continue
            try:
                if isinstance(node, flow.Task):
                    state = self._invoke(node.step, step_for[node.step], state)
                else:  # the Map: each item is its own task with its own retries, as on AWS
                    task = node.task
                    results = [
                        self._invoke(
                            task.step,
                            step_for[task.step],
                            PageRangeTask(state=state, **{f: getattr(item, f) for f in node.item_fields}),
                        )
                        for item in getattr(state, node.items)
                    ]
                    state = state.model_copy(update={node.result: results})
            except Exception as exc:  # the Catch: States.ALL
                if node.catch is None:
                    raise
                # One line per failed document (its row says the same); the traceback only when debugging.
                log.error("document %s failed: %s: %s", ref.source, type(exc).__name__, exc)
                log.debug("document %s failed", ref.source, exc_info=True)
                state = state.model_copy(update={"error": StepError(Error=type(exc).__name__, Cause=str(exc))})
                name = node.catch
                continue
            if node.next is None:
                return state
            name = node.next
