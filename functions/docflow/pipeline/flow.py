"""The document pipeline's shape, written once: the Step Functions state machine (infra_cdk/constructs/pipeline.py)
is built from it and the embedded runner (pipeline/runner.py) walks it, so the flow changes here only. A new step
also needs its function in runner.steps(), its handler and its Lambda in infra_cdk/constants.py FUNCTIONS
(tests/unit/test_flow.py names what is missing).

STATES below reads top to bottom as the flow: Validate, then Accepted? (no: record the rejection or duplicate),
then Long PDF? (yes: a Map over page ranges and their merge; no: extract text), then Classify. A task with a
``catch`` that fails (after its retries, as docflow.pipeline.policy says for every task) goes to Record failure
and ends in Document failed.

Names: a task's ``step`` is its Lambda in PipelineFunctions (infra_cdk/constants.py FUNCTIONS), its step function
in the runner and its telemetry name; every other name is a Step Functions state name, which deployed machines
and tests know: keep them. Plain data (stdlib only): the CDK app and the Lambda cold starts import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Check(Enum):
    """What a Choice asks of one field of the state."""

    IS_TRUE = "is true"
    HAS_FIRST_ITEM = "has a first item"


@dataclass(frozen=True)
class Task:
    state: str
    step: str
    next: str | None = None  # None: the end (of the Map's iteration)
    catch: str | None = None  # where a failure goes, with the error in the state's ``error``
    owner_input: bool = False  # given the execution's id as ``owner`` with its input ({"event", "owner"})


@dataclass(frozen=True)
class Choice:
    state: str
    field: str
    check: Check
    then: str
    otherwise: str


@dataclass(frozen=True)
class Map:
    """``task`` once per item of the state's ``items`` list, given {"state": the state, **the item's fields};
    the results, in order, land in the state's ``result`` field."""

    state: str
    items: str
    item_fields: tuple[str, ...]
    task: Task
    result: str
    next: str
    catch: str | None = None


@dataclass(frozen=True)
class Succeed:
    state: str


@dataclass(frozen=True)
class Fail:
    state: str
    cause: str


State = Task | Choice | Map | Succeed | Fail

ON_ERROR = "Record failure"

STATES: tuple[State, ...] = (
    Task("Validate document", step="Validate", next="Accepted?", catch=ON_ERROR, owner_input=True),
    Choice("Accepted?", "proceed", Check.IS_TRUE, then="Long PDF?", otherwise="Record rejection or duplicate"),
    Task("Record rejection or duplicate", step="RecordOutcome", next="Done", catch=ON_ERROR),
    Choice("Long PDF?", "page_ranges", Check.HAS_FIRST_ITEM, then="Extract page ranges", otherwise="Extract text"),
    Task("Extract text", step="ExtractText", next="Classify document", catch=ON_ERROR),
    Map(
        "Extract page ranges",
        items="page_ranges",
        item_fields=("first_page", "last_page"),
        task=Task("Extract page range", step="ExtractPages"),  # the Map's own catch covers it
        result="parts",
        next="Merge page ranges",
        catch=ON_ERROR,
    ),
    Task("Merge page ranges", step="MergeText", next="Classify document", catch=ON_ERROR),
    Task("Classify document", step="Classify", next="Done", catch=ON_ERROR),
    Succeed("Done"),
    Task(ON_ERROR, step="RecordFailure", next="Document failed", owner_input=True),
    Fail("Document failed", cause="A step failed; the record holds the error and cause"),
)
START = STATES[0].state

BY_NAME: dict[str, State] = {s.state: s for s in STATES}


def tasks() -> list[Task]:
    """Every task, the Map's included."""
    found = []
    for state in STATES:
        if isinstance(state, Task):
            found.append(state)
        elif isinstance(state, Map):
            found.append(state.task)
    return found
