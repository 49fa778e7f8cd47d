"""Fault injection by configuration: DOCFLOW_FAULTS makes chosen pipeline steps fail, no code edits.

    DOCFLOW_FAULTS="ExtractText=transient:2,Classify=permanent"
    DOCFLOW_FAULTS="ExtractText=transient:1@0.05,Classify=permanent@0.01"   DOCFLOW_FAULTS_SEED=7

Each entry is `Step=kind[:N][@rate]`: Step is a state machine function name (infra_cdk/constants.py
FUNCTIONS, RecordFailure excepted: it is the Catch target, nothing catches it); kind `transient` raises
TransientError N times (default 1) per document, then lets the step run; `permanent` raises PermanentError
every time. `@rate` picks that share of documents, deterministically from DOCFLOW_FAULTS_SEED and the
document's id (its content hash; before Validate has hashed it, its blob key), so a run is repeatable and
every process, Lambda or worker, picks the same documents.

"N times per document" holds across processes and concurrent invocations: every injection is an atomic
increment of a counter in the record store (DynamoDB ADD, SQLite upsert), so the store also says how many
faults were injected. ExtractPages counts per page range, since each range is its own task.

The hook sits on the step functions themselves (`fault_point`), the one place the Lambda handlers, the
embedded runner and the API's synchronous path all go through.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from docflow.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from docflow.context import StepContext

FAULTABLE_STEPS = ("Validate", "RecordOutcome", "ExtractText", "ExtractPages", "MergeText", "Classify")

_ENTRY = re.compile(r"^(?P<step>\w+)=(?P<kind>transient|permanent)(?::(?P<times>\d+))?(?:@(?P<rate>[0-9.]+))?$")


class Fault(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: str
    kind: Literal["transient", "permanent"]
    times: int = Field(default=1, ge=1)  # transient: failures per document before the step may run
    rate: float = Field(default=1.0, gt=0.0, le=1.0)  # share of documents this fault applies to


class FaultPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    faults: tuple[Fault, ...] = ()
    seed: int = 0

    def for_step(self, step: str) -> Fault | None:
        return next((f for f in self.faults if f.step == step), None)

    def selects(self, fault: Fault, document_key: str) -> bool:
        """Whether this fault applies to this document: a seeded hash below the rate."""
        if fault.rate >= 1.0:
            return True
        digest = hashlib.sha256(f"{self.seed}:{fault.step}:{document_key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64 < fault.rate


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """DOCFLOW_FAULTS's value as faults; ValueError naming the bad entry."""
    faults: list[Fault] = []
    for raw in (part.strip() for part in spec.split(",")):
        if not raw:
            continue
        match = _ENTRY.match(raw)
        if not match:
            raise ValueError(f"fault {raw!r}: expected Step=transient[:N][@rate] or Step=permanent[@rate]")
        step, kind = match["step"], match["kind"]
        if step not in FAULTABLE_STEPS:
            raise ValueError(f"fault {raw!r}: step must be one of {', '.join(FAULTABLE_STEPS)}")
        if kind == "permanent" and match["times"]:
            raise ValueError(f"fault {raw!r}: a permanent fault has no count")
        if any(f.step == step for f in faults):
            raise ValueError(f"fault {raw!r}: {step} is named twice")
        try:
            faults.append(
                Fault(
                    step=step,
                    kind=kind,  # the regex admits only the two literals
                    times=int(match["times"] or 1),
                    rate=float(match["rate"] or 1.0),
                )
            )
        except ValueError as exc:  # pydantic's ValidationError: count < 1, rate outside (0, 1]
            raise ValueError(f"fault {raw!r}: count must be >= 1 and rate in (0, 1]") from exc
    return tuple(faults)


@functools.lru_cache(maxsize=8)
def fault_plan(spec: str, seed: int) -> FaultPlan | None:
    faults = parse_faults(spec)
    return FaultPlan(faults=faults, seed=seed) if faults else None


def counter_name(step: str, document_key: str, part: str | None = None) -> str:
    """The record-store counter of injections of `step`'s fault into one document (or page range)."""
    return f"fault:{step}:{document_key}" + (f":{part}" if part else "")


def _target(payload: object) -> tuple[str, str | None]:
    """(document key, page-range part) of a step's payload: a PipelineState or a PageRangeTask."""
    from docflow.pipeline.state import PageRangeTask, PipelineState

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
