"""The synthesized pipeline state machine is the flow docflow.pipeline.flow describes, the one the embedded
runner walks (tests/unit/test_flow.py): the same states, transitions, catches, checks, Map and Lambdas."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template

from docflow.pipeline import flow, policy
from infra_cdk import constants as c

pytestmark = pytest.mark.infra

OWNED_PAYLOAD = {"event.$": "$", "owner.$": "$$.Execution.Id"}


def _definition(template: Template) -> dict[str, Any]:
    """The pipeline machine's definition, each function's ARN written as the step whose Lambda it is."""
    step_by_handler = {spec.handler: step for step, spec in c.FUNCTIONS.items()}
    step_by_id = {
        logical_id: step_by_handler.get(fn["Properties"]["Handler"], "?")
        for logical_id, fn in template.find_resources("AWS::Lambda::Function").items()
    }
    machines = template.find_resources("AWS::StepFunctions::StateMachine")
    sm = next(v for k, v in machines.items() if k.startswith("PipelineStateMachine"))  # not the training loop
    parts = sm["Properties"]["DefinitionString"]["Fn::Join"][1]

    def text(part: Any) -> str:
        if isinstance(part, str):
            return part
        if "Fn::GetAtt" in part:
            return f"lambda:{step_by_id[part['Fn::GetAtt'][0]]}"
        return "TOKEN"

    return json.loads("".join(text(p) for p in parts))


def _expected_task(spec: flow.Task) -> dict[str, Any]:
    params: dict[str, Any] = {"FunctionName": f"lambda:{spec.step}"}
    params.update({"Payload": OWNED_PAYLOAD} if spec.owner_input else {"Payload.$": "$"})
    return {
        "Type": "Task",
        "Parameters": params,
        "OutputPath": "$.Payload",
        **({"Next": spec.next} if spec.next else {"End": True}),
        **_catch(spec.catch),
    }


def _catch(target: str | None) -> dict[str, Any]:
    if target is None:
        return {}
    return {
        "Catch": [{"ErrorEquals": list(policy.CATCH_ERRORS), "ResultPath": policy.ERROR_RESULT_PATH, "Next": target}]
    }


def _expected_choice(spec: flow.Choice) -> dict[str, Any]:
    # What Step Functions evaluates for each check: the same as docflow.pipeline.runner.holds.
    condition = {
        flow.Check.IS_TRUE: {"Variable": f"$.{spec.field}", "BooleanEquals": True},
        flow.Check.HAS_FIRST_ITEM: {"Variable": f"$.{spec.field}[0]", "IsPresent": True},
    }[spec.check]
    return {"Type": "Choice", "Choices": [{**condition, "Next": spec.then}], "Default": spec.otherwise}


def _expected(spec: flow.State) -> dict[str, Any]:
    if isinstance(spec, flow.Task):
        return _expected_task(spec)
    if isinstance(spec, flow.Choice):
        return _expected_choice(spec)
    if isinstance(spec, flow.Map):
        return {
            "Type": "Map",
            "ItemsPath": f"$.{spec.items}",
            "ItemSelector": {"state.$": "$", **{f"{f}.$": f"$$.Map.Item.Value.{f}" for f in spec.item_fields}},
            "ResultPath": f"$.{spec.result}",
            "MaxConcurrency": c.MAP_MAX_CONCURRENCY,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": spec.task.state,
                "States": {spec.task.state: _expected_task(spec.task)},
            },
            "Next": spec.next,
            **_catch(spec.catch),
        }
    if isinstance(spec, flow.Succeed):
        return {"Type": "Succeed"}
    return {"Type": "Fail", "Cause": spec.cause}


def _without_task_plumbing(state: dict[str, Any]) -> dict[str, Any]:
    """A state less what every task has alike (Resource; Retry, which test_stack holds to the policy)."""
    out = {k: v for k, v in state.items() if k not in ("Resource", "Retry")}
    if "ItemProcessor" in state:
        processor = state["ItemProcessor"]
        out["ItemProcessor"] = {
            **processor,
            "States": {name: _without_task_plumbing(s) for name, s in processor["States"].items()},
        }
    return out


def test_the_state_machine_is_the_flow(template: Template) -> None:
    definition = _definition(template)
    assert definition["StartAt"] == flow.START
    synthesized = {name: _without_task_plumbing(s) for name, s in definition["States"].items()}
    assert synthesized == {spec.state: _expected(spec) for spec in flow.STATES}


def test_every_task_is_retried_as_the_policy_says(template: Template) -> None:
    states = _definition(template)["States"]
    retried = {name for name, s in states.items() if s.get("Retry")}
    for s in states.values():
        retried |= {name for name, inner in s.get("ItemProcessor", {}).get("States", {}).items() if inner.get("Retry")}
    assert retried == {t.state for t in flow.tasks()}  # the tasks, the Map's included; not the Map itself
