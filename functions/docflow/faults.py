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

This module is the plan: what DOCFLOW_FAULTS says (parsed and checked when Settings is read) and which
documents it picks. The hook that acts on it sits on the step functions themselves
(`docflow.pipeline.fault_point`), the one place the Lambda handlers, the embedded runner and the API's
synchronous path all go through.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
