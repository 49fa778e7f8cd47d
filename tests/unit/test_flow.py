"""One description of the pipeline's flow (docflow.pipeline.flow) that the embedded runner walks and the CDK
state machine is built from: these checks fail when the runner, the Lambdas or flow.py disagree.
(tests/infra/test_flow_asl.py holds the synthesized state machine to the same description.)"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from docflow.adapters.files import LocalBlobStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.context import StepContext
from docflow.errors import PermanentError
from docflow.handlers._step import STEP_NAMES
from docflow.pipeline import flow, runner
from docflow.pipeline.state import DocumentRef, PagePart, PageRange, PageRangeTask, PipelineState
from docflow.settings import Settings
from infra_cdk import constants as c

pytestmark = pytest.mark.unit

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"


def _targets(state: flow.State) -> list[str]:
    if isinstance(state, flow.Choice):
        return [state.then, state.otherwise]
    if isinstance(state, flow.Task | flow.Map):
        return [name for name in (state.next, state.catch) if name]
    return []


def test_every_transition_names_a_state_and_every_state_is_reached() -> None:
    names = [s.state for s in flow.STATES]
    assert len(names) == len(set(names)), "state names must be unique"
    assert all(t in flow.BY_NAME for s in flow.STATES for t in _targets(s))
    reached, todo = set(), [flow.START]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += _targets(flow.BY_NAME[name])
    assert reached == set(names)
    # Only the Map's own task ends without a next state; a top-level task always goes on.
    assert all(s.next for s in flow.STATES if isinstance(s, flow.Task))


def test_every_task_has_a_step_function_in_the_runner_and_a_lambda() -> None:
    steps = {t.step for t in flow.tasks()}
    assert len(steps) == len(flow.tasks()), "one task per step"
    assert set(runner.steps()) == steps
    assert steps <= set(c.FUNCTIONS)


def test_each_step_function_is_named_after_its_step() -> None:
    # ExtractText -> extract_text_step: a newcomer finds a step's function by its name (docs/development.md)
    named = {re.sub(r"(?<!^)(?=[A-Z])", "_", step).lower() + "_step": step for step in runner.steps()}
    assert {fn.__name__: step for step, fn in runner.steps().items()} == named
    assert named == STEP_NAMES  # the StepSeconds dimension of each function


def _handler_source(step: str) -> str:
    module = c.FUNCTIONS[step].handler.rsplit(".", 1)[0]
    return (FUNCTIONS_DIR / f"{module.replace('.', '/')}.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("task", flow.tasks(), ids=lambda t: t.step)
def test_each_lambda_runs_the_runners_step_and_unwraps_the_owner_when_given_it(task: flow.Task) -> None:
    tree = ast.parse(_handler_source(task.step))
    imported = {
        (node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    step_fn = runner.steps()[task.step]
    assert (step_fn.__module__, step_fn.__name__) in imported
    # A task handed {"event", "owner"} needs a handler that unwraps it (docflow.handlers._step.parse_event).
    assert (("docflow.handlers._step", "parse_event") in imported) == task.owner_input


def test_fields_the_flow_reads_and_writes_are_the_states() -> None:
    fields = set(PipelineState.model_fields)
    for s in flow.STATES:
        if isinstance(s, flow.Choice):
            assert s.field in fields, s
        if isinstance(s, flow.Map):
            assert {s.items, s.result} <= fields, s
            # Each iteration's input: the state, with the item's fields beside it.
            assert set(PageRangeTask.model_fields) == {"state", *s.item_fields}
            assert set(s.item_fields) <= set(PageRange.model_fields)


# A value each check holds for, and one it does not.
CHECK_EXAMPLES: dict[flow.Check, tuple[object, object]] = {
    flow.Check.IS_TRUE: (True, False),
    flow.Check.HAS_FIRST_ITEM: ([PageRange(first_page=1, last_page=2)], []),
}


def test_the_runner_knows_every_check() -> None:
    assert set(CHECK_EXAMPLES) == set(flow.Check)
    for check, (true, false) in CHECK_EXAMPLES.items():
        assert runner.holds(check, true), check
        assert not runner.holds(check, false) and not runner.holds(check, None), check


def test_flow_imports_nothing_heavy() -> None:
    # The CDK app and every Lambda cold start import it: the standard library and the policy at most.
    path = FUNCTIONS_DIR / "docflow" / "pipeline" / "flow.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert all(m.split(".")[0] in sys.stdlib_module_names or m == "docflow.pipeline.policy" for m in imported), imported


# -- the runner walks the flow -------------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> StepContext:
    return StepContext(
        settings=Settings(home=tmp_path),
        blobs=LocalBlobStore(tmp_path / "blobs"),
        records=SqliteRecordStore(tmp_path / "records.sqlite3"),
    )


class Recorder:
    """Stand-in steps for the runner: records each call's step, in order. Validate accepts (or not) and splits
    the document into ``pages`` one-page ranges (none: a short document); the steps in ``fail`` raise."""

    def __init__(self, proceed: bool = True, pages: int = 0, fail: tuple[str, ...] = ()) -> None:
        self.calls: list[str] = []
        self.proceed, self.pages, self.fail = proceed, pages, fail

    def steps(self) -> dict[str, Any]:
        self.calls = []  # a fresh run
        return {step: self._step(step) for step in REAL_STEPS()}

    def _step(self, step: str) -> Any:
        def run(payload: Any, ctx: StepContext) -> Any:
            self.calls.append(step)
            if step in self.fail:
                raise PermanentError(f"{step} broke")
            if step == "Validate":
                ranges = [PageRange(first_page=p, last_page=p) for p in range(1, self.pages + 1)]
                return payload.model_copy(update={"proceed": self.proceed, "page_ranges": ranges or None})
            if step == "ExtractPages":
                assert isinstance(payload, PageRangeTask) and payload.first_page == payload.last_page
                return PagePart(first_page=payload.first_page, last_page=payload.last_page, key="k")
            if step == "MergeText":  # the Map's results, in order
                assert [p.first_page for p in payload.parts] == list(range(1, self.pages + 1))
            return payload

        return run


REAL_STEPS = runner.steps


def _run(ctx: StepContext, monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> PipelineState:
    monkeypatch.setattr(runner, "steps", recorder.steps)
    return runner.Runner(ctx, sleep=lambda s: None).run(DocumentRef(key="k", source="a.pdf"))


MERGE_FAILS = ["Validate", "ExtractPages", "ExtractPages", "MergeText", "RecordFailure"]


@pytest.mark.parametrize(
    ("recorder", "path"),
    [
        (Recorder(proceed=False), ["Validate", "RecordOutcome"]),
        (Recorder(), ["Validate", "ExtractText", "Classify"]),
        (Recorder(pages=3), ["Validate", "ExtractPages", "ExtractPages", "ExtractPages", "MergeText", "Classify"]),
        (Recorder(fail=("Validate",)), ["Validate", "RecordFailure"]),
        (Recorder(proceed=False, fail=("RecordOutcome",)), ["Validate", "RecordOutcome", "RecordFailure"]),
        (Recorder(pages=2, fail=("ExtractPages",)), ["Validate", "ExtractPages", "RecordFailure"]),
        (Recorder(pages=2, fail=("MergeText",)), MERGE_FAILS),
        (Recorder(fail=("Classify",)), ["Validate", "ExtractText", "Classify", "RecordFailure"]),
    ],
)
def test_the_runner_takes_the_flows_path(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch, recorder: Recorder, path: list[str]
) -> None:
    state = _run(ctx, monkeypatch, recorder)
    assert recorder.calls == path
    if recorder.fail:  # the Catch: RecordFailure is handed the error
        assert state.error is not None and state.error.Cause == f"{recorder.fail[0]} broke"
    else:
        assert state.error is None


def test_a_failure_in_record_failure_is_not_caught_again(ctx: StepContext, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(fail=("Classify", "RecordFailure"))
    with pytest.raises(PermanentError, match="RecordFailure broke"):
        _run(ctx, monkeypatch, recorder)
    assert recorder.calls == ["Validate", "ExtractText", "Classify", "RecordFailure"]


def test_the_docs_table_of_where_each_step_lives_is_true() -> None:
    """docs/development.md's "Where each step lives": one row per step of the flow, and each file it names
    exists; the handler calls the step function the runner runs."""
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "docs" / "development.md").read_text()
    section = text.split("### Where each step lives", 1)[1].split("\n\n", 3)[2]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")
    ][1:]
    assert {row[0] for row in rows} == {task.step for task in flow.tasks()}
    for step, handler, function, domain, _adapters, constructs in rows:
        paths = re.findall(r"`([^`]+)`", " ".join((handler, domain, constructs)))
        for path in paths:
            root = repo / "infra_cdk" if path.startswith("constructs/") else repo / "functions" / "docflow"
            assert (root / path).exists(), (step, path)
        handler_source = (repo / "functions" / "docflow" / handler.strip("`")).read_text()
        name = function.strip("`")
        assert name in handler_source and runner.steps()[step].__name__ == name, (step, name)
