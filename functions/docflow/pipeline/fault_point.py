"""DOCFLOW_FAULTS's hook on the pipeline's step functions (docflow.faults has the plan it acts on).

`fault_point` marks a step function with its state machine function name; before the step runs, `inject`
raises the fault the plan holds for that step and document, if any, counting each injection in the record
store so that "N times per document" holds across processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from docflow.context import StepContext
from docflow.errors import PermanentError, TransientError
from docflow.faults import FAULTABLE_STEPS, counter_name, fault_plan
from docflow.pipeline.state import PageRangeTask, PipelineState


def _target(payload: object) -> tuple[str, str | None]:
    """(document key, page-range part) of a step's payload: a PipelineState or a PageRangeTask."""
    if isinstance(payload, PageRangeTask):
        state, part = payload.state, f"{payload.first_page}-{payload.last_page}"
    elif isinstance(payload, PipelineState):
        state, part = payload, None
    else:
        raise TypeError(f"no document in a {type(payload).__name__}")
    return state.document_id or state.ref.key, part


def inject(step: str, payload: object, ctx: StepContext) -> None:
    """Raise the configured fault for this step and document, if any."""
    plan = fault_plan(ctx.settings.faults, ctx.settings.faults_seed)
    fault = plan.for_step(step) if plan else None
    if plan is None or fault is None:
        return
    document_key, part = _target(payload)
    if not plan.selects(fault, document_key):
        return
    name = counter_name(step, document_key, part)
    if fault.kind == "permanent":
        ctx.records.increment_counter(name)
        raise PermanentError(f"injected permanent fault in {step} (DOCFLOW_FAULTS)")
    if ctx.records.get_counter(name) >= fault.times:
        return  # already failed N times: cheap read first, no write once the faults are spent
    # The increment decides, not the read: two concurrent invocations cannot both take the last fault.
    n = ctx.records.increment_counter(name)
    if n <= fault.times:
        raise TransientError(f"injected transient fault {n}/{fault.times} in {step} (DOCFLOW_FAULTS)")


P = TypeVar("P")
R = TypeVar("R")


def fault_point(step: str) -> Callable[[Callable[[P, StepContext], R]], Callable[[P, StepContext], R]]:
    """Mark a pipeline step function as `step` (its state machine function name) for DOCFLOW_FAULTS."""
    if step not in FAULTABLE_STEPS:
        raise ValueError(f"unknown step {step!r}")

    def decorate(fn: Callable[[P, StepContext], R]) -> Callable[[P, StepContext], R]:
        @functools.wraps(fn)
        def wrapper(payload: P, ctx: StepContext) -> R:
            if ctx.settings.faults:
                inject(step, payload, ctx)
            return fn(payload, ctx)

        return wrapper

    return decorate
