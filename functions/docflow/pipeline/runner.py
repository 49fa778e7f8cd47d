"""The embedded orchestrator: the state machine's flow and its retry/catch policy, in-process.

Same steps, same order, same Choice, same Retry and Catch (pipeline/policy.py) as the Step Functions
definition in infra_cdk, so a document takes the same path on a laptop as on AWS.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from docflow import telemetry
from docflow.context import StepContext
from docflow.pipeline import policy
from docflow.pipeline.state import DocumentRef, PageRangeTask, PipelineState, StepError
from docflow.pipeline.steps import (
    classify_step,
    extract_pages_step,
    extract_step,
    merge_text_step,
    record_failure_step,
    record_outcome_step,
    validate_step,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


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
        process running it died, so that the document's unfinished record is taken for its own work."""
        state = PipelineState(ref=ref, languages=languages, owner=owner or uuid.uuid4().hex)
        try:
            state = self._invoke("Validate", validate_step, state)
            if not state.proceed:
                return self._invoke("RecordOutcome", record_outcome_step, state)
            if state.page_ranges:
                # The Map: each range is its own task with its own retries, as on AWS.
                parts = [
                    self._invoke(
                        "ExtractPages",
                        extract_pages_step,
                        PageRangeTask(state=state, first_page=r.first_page, last_page=r.last_page),
                    )
                    for r in state.page_ranges
                ]
                state = self._invoke("MergeText", merge_text_step, state.model_copy(update={"parts": parts}))
            else:
                state = self._invoke("ExtractText", extract_step, state)
            return self._invoke("Classify", classify_step, state)
        except Exception as exc:  # the Catch: States.ALL
            # One line per failed document (its row says the same); the traceback only when debugging.
            log.error("document %s failed: %s: %s", ref.source, type(exc).__name__, exc)
            log.debug("document %s failed", ref.source, exc_info=True)
            failed = state.model_copy(update={"error": StepError(Error=type(exc).__name__, Cause=str(exc))})
            return self._invoke("RecordFailure", record_failure_step, failed)
