"""CDK assertions on the training loop (infra_cdk/constructs/training.py): the state machine's four steps and the
review queue's rescoring after Publish, the SageMaker task, what starts it, and that every role in it can do its
job and nothing more."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template

from docflow.pipeline import policy
from docflow.retrain import EVENT_DETAIL_TYPE, EVENT_SOURCE
from docflow_training.launch import SM_ENTRY_SCRIPT, SageMakerJobConfig
from infra_cdk import constants as c

pytestmark = pytest.mark.infra


def _resources(template: Template, type_: str) -> dict[str, Any]:
    return dict(template.find_resources(type_))


def _training_machine(template: Template) -> tuple[str, dict[str, Any]]:
    machines = _resources(template, "AWS::StepFunctions::StateMachine")
    found = [(k, v) for k, v in machines.items() if k.startswith("TrainingStateMachine")]
    assert len(found) == 1, list(machines)
    return found[0]


def _definition(template: Template) -> dict[str, Any]:
    _, sm = _training_machine(template)
    parts = sm["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else json.dumps(p).replace('"', "'") for p in parts)
    return json.loads(text)


def _statements(template: Template, role_logical: str) -> list[dict[str, Any]]:
    return [
        s
        for p in _resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role_logical} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_of_function(template: Template, handler: str) -> str:
    fn = next(
        f for f in _resources(template, "AWS::Lambda::Function").values() if f["Properties"].get("Handler") == handler
    )
    return str(fn["Properties"]["Role"]["Fn::GetAtt"][0])


def _job_role(template: Template) -> str:
    roles = _resources(template, "AWS::IAM::Role")
    found = [
        k
        for k, r in roles.items()
        if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].get("Service")
        == "sagemaker.amazonaws.com"
    ]
    assert len(found) == 1, found
    return found[0]


def test_four_steps_in_order_with_a_choice_on_the_gate(template: Template) -> None:
    definition = _definition(template)
    states = definition["States"]
    assert definition["StartAt"] == "Prepare data"
    assert states["Prepare data"]["Next"] == "Train model"
    assert states["Train model"]["Next"] == "Evaluate and gate"
    assert states["Evaluate and gate"]["Next"] == "Decision"
    assert states["Decision"]["Next"] == "Promoted?"
    choice = states["Promoted?"]
    assert choice["Type"] == "Choice"
    assert choice["Choices"] == [{"Variable": "$.decision.promoted", "BooleanEquals": True, "Next": "Publish model"}]
    assert choice["Default"] == "Refused by the gate" and states["Refused by the gate"]["Type"] == "Succeed"
    assert states["Publish model"]["Next"] == "Rescore review queue"
    for name in ("Prepare data", "Evaluate and gate", "Publish model"):
        assert states[name]["Resource"].endswith(":states:::lambda:invoke"), name
    assert states["Train model"]["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
    assert states["Published"]["Type"] == "Succeed"


def test_after_publish_the_review_queue_is_rescored_in_a_bounded_loop(template: Template) -> None:
    states = _definition(template)["States"]
    rescore = states["Rescore review queue"]
    assert rescore["Type"] == "Task"
    # The handler's report itself (payload only) is $.rescore: the next invocation's input carries its cursor
    assert "RescoreQueue" in rescore["Resource"] and "Parameters" not in rescore
    assert rescore["ResultPath"] == "$.rescore"
    assert rescore["Next"] == "Queue rescored?"
    choice = states["Queue rescored?"]
    assert choice["Type"] == "Choice"
    assert choice["Choices"] == [
        {"Variable": "$.rescore.done", "BooleanEquals": True, "Next": "Published"},
        {
            "Variable": "$.rescore.invocations",
            "NumericLessThan": c.RESCORE_MAX_INVOCATIONS,
            "Next": "Rescore review queue",
        },
    ]
    # Bounded: every step at its longest, the rescore's invocations all used, still ends within the execution's
    # timeout (a timed-out execution would be a failed run, though its model was published)
    longest = sum(spec.timeout_s for name, spec in c.TRAINING_FUNCTIONS.items() if name != "RescoreQueue")
    longest += SageMakerJobConfig().max_run_seconds
    longest += c.RESCORE_MAX_INVOCATIONS * c.TRAINING_FUNCTIONS["RescoreQueue"].timeout_s
    assert longest < c.TRAINING_TIMEOUT_HOURS * 3600
    assert choice["Default"] == "Rescore stopped"
    assert states["Rescore stopped"]["Type"] == "Pass" and states["Rescore stopped"]["Next"] == "Published"
    # The model is published by now: a failed rescore is recorded, and the run still succeeds
    assert rescore["Catch"] == [
        {"ErrorEquals": list(policy.CATCH_ERRORS), "ResultPath": "$.rescore_error", "Next": "Rescore failed"}
    ]
    assert states["Rescore failed"]["Type"] == "Pass" and states["Rescore failed"]["Next"] == "Published"
    # Only a promoted and published model gets there
    leading_in = sorted(
        name
        for name, state in states.items()
        if state.get("Next") == "Rescore review queue"
        or any(ch.get("Next") == "Rescore review queue" for ch in state.get("Choices", []))
    )
    assert leading_in == ["Publish model", "Queue rescored?"]


def test_retry_and_catch_come_from_the_pipeline_policy(template: Template) -> None:
    states = _definition(template)["States"]
    expected_retry = [
        {
            "ErrorEquals": list(rule.errors),
            "IntervalSeconds": rule.interval_seconds,
            "MaxAttempts": rule.max_attempts,
            "BackoffRate": rule.backoff_rate,
            "MaxDelaySeconds": rule.max_delay_seconds,
            "JitterStrategy": "FULL",
        }
        for rule in policy.RETRY_RULES
    ]
    catch = [
        {
            "ErrorEquals": list(policy.CATCH_ERRORS),
            "ResultPath": policy.ERROR_RESULT_PATH,
            "Next": "Training loop failed",
        }
    ]
    for name in ("Prepare data", "Evaluate and gate", "Publish model"):
        assert states[name]["Retry"] == expected_retry, name
        assert states[name]["Catch"] == catch, name
    # The rescore is retried the same way; its catch is its own (test_after_publish_the_review_queue_is_rescored…)
    assert states["Rescore review queue"]["Retry"] == expected_retry
    # A training job is not retried (a failed fit would fail again, at GPU prices), but caught
    assert "Retry" not in states["Train model"]
    assert states["Train model"]["Catch"] == catch
    failed = states["Training loop failed"]
    assert failed["Type"] == "Fail" and failed["CausePath"] == "$.error.Cause"


def test_sagemaker_task_instance_role_channels_output_and_hyperparameters(template: Template) -> None:
    params = _definition(template)["States"]["Train model"]["Parameters"]
    assert params["ResourceConfig"]["InstanceType"] == SageMakerJobConfig().instance_type == "ml.g5.xlarge"
    assert params["ResourceConfig"]["InstanceCount"] == 1
    assert params["StoppingCondition"]["MaxRuntimeInSeconds"] == SageMakerJobConfig().max_run_seconds
    assert _job_role(template) in params["RoleArn"]
    assert params["TrainingJobName.$"] == "$.prepared.job_name"
    assert params["OutputDataConfig"] == {"S3OutputPath.$": "$.prepared.output_path"}
    channels = {ch["ChannelName"]: ch["DataSource"]["S3DataSource"]["S3Uri.$"] for ch in params["InputDataConfig"]}
    assert channels == {name: f"$.prepared.channels.{name}" for name in ("train", "validation", "feedback")}
    assert "pytorch-training:2.5-gpu-py311" in params["AlgorithmSpecification"]["TrainingImage"]
    hp = params["HyperParameters"]
    assert hp["sagemaker_program"] == SM_ENTRY_SCRIPT
    assert "cdk-hnb659fds-assets" in hp["sagemaker_submit_directory"]  # the code asset
    assert hp["register_version"] == "false"  # the gate is the next state, not the job
    assert hp["family"] == "linear"  # cdk context trainingFamily=transformer fits the transformer family


def test_schedule_and_new_labels_start_the_training_machine_with_a_dlq(template: Template) -> None:
    logical, _ = _training_machine(template)
    rules = _resources(template, "AWS::Events::Rule")
    ours = {k: r for k, r in rules.items() if r["Properties"]["Targets"][0]["Arn"] == {"Ref": logical}}
    schedule = [r for r in ours.values() if r["Properties"].get("ScheduleExpression") == c.TRAINING_SCHEDULE]
    labels = [
        r
        for r in ours.values()
        if r["Properties"].get("EventPattern") == {"source": [EVENT_SOURCE], "detail-type": [EVENT_DETAIL_TYPE]}
    ]
    assert len(schedule) == 1 and len(labels) == 1 and len(ours) == 2
    for rule in ours.values():
        target = rule["Properties"]["Targets"][0]
        assert "DeadLetterConfig" in target
        template_text = target["InputTransformer"]["InputTemplate"]
        assert '"trigger":"schedule"' in template_text or '"trigger":"labels"' in template_text, template_text


def test_the_api_counts_labels_and_may_send_the_event(template: Template) -> None:
    api = next(
        f
        for f in _resources(template, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == c.API_FUNCTION.handler
    )
    variables = api["Properties"]["Environment"]["Variables"]
    assert variables["DOCFLOW_RETRAIN_LABEL_THRESHOLD"] == str(c.RETRAIN_LABEL_THRESHOLD)
    assert variables["DOCFLOW_EVENT_BUS_NAME"] == "default"
    put_events = [
        s
        for s in _statements(template, _role_of_function(template, c.API_FUNCTION.handler))
        if s["Action"] == "events:PutEvents"
    ]
    assert len(put_events) == 1
    assert "event-bus/default" in json.dumps(put_events[0]["Resource"])


def test_job_role_reads_its_channels_and_code_writes_its_output_and_nothing_else(template: Template) -> None:
    statements = _statements(template, _job_role(template))
    resources = [json.dumps(r) for s in statements for r in _as_list(s["Resource"])]
    assert all(r != '"*"' for r in resources), resources
    actions = {a for s in statements for a in _as_list(s["Action"])}
    assert not any(a.startswith(("s3:Delete", "iam:", "sagemaker:")) for a in actions), actions
    for statement in statements:
        for action in _as_list(statement["Action"]):
            where = json.dumps(statement["Resource"])
            if action.startswith("s3:Put"):
                assert "/training/jobs/*" in where and "/models/" not in where, statement
            elif action.startswith("s3:Get") and "StorageModels" in where:
                assert "/training/*" in where, statement
            elif action.startswith("logs:"):
                assert "/aws/sagemaker/TrainingJobs" in where, statement


def test_state_machine_role_passes_only_the_job_role_and_runs_only_training_jobs(template: Template) -> None:
    _, sm = _training_machine(template)
    statements = _statements(template, sm["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    passes = [s for s in statements if "iam:PassRole" in _as_list(s["Action"])]
    assert len(passes) == 1 and passes[0]["Resource"] == {"Fn::GetAtt": [_job_role(template), "Arn"]}
    for statement in statements:
        sagemaker = [a for a in _as_list(statement["Action"]) if a.startswith("sagemaker:")]
        if sagemaker and sagemaker != ["sagemaker:ListTags"]:
            assert ":training-job/" in json.dumps(statement["Resource"]), statement


def test_functions_are_granted_by_step(template: Template) -> None:
    spec = c.TRAINING_FUNCTIONS

    def s3_writes(handler: str) -> list[str]:
        return [
            json.dumps(s["Resource"])
            for s in _statements(template, _role_of_function(template, handler))
            if any(a.startswith("s3:Put") for a in _as_list(s["Action"]))
        ]

    def dynamodb_actions(handler: str) -> set[str]:
        return {
            a
            for s in _statements(template, _role_of_function(template, handler))
            for a in _as_list(s["Action"])
            if a.startswith("dynamodb:")
        }

    prepare, gate, publish, rescore = (
        spec[n].handler for n in ("PrepareTrainingData", "EvaluateAndGate", "PublishModel", "RescoreQueue")
    )
    assert all("/training/jobs/*" in w for w in s3_writes(prepare)) and s3_writes(prepare)
    assert all("/models/*" in w for w in s3_writes(gate)) and s3_writes(gate)
    assert all("/models/*" in w for w in s3_writes(publish)) and s3_writes(publish)
    # PrepareData reads the users' labels; nothing in the loop but the rescore writes records
    assert "dynamodb:Scan" in dynamodb_actions(prepare)
    assert not any(
        a in {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} for a in dynamodb_actions(prepare)
    )
    assert not dynamodb_actions(gate) and not dynamodb_actions(publish)
    # The rescore, as Classify: the queued records and their history, the text in, the result files out
    assert {"dynamodb:Query", "dynamodb:PutItem"} <= dynamodb_actions(rescore)
    assert all("/results/*" in w and "StorageDocuments" in w for w in s3_writes(rescore)) and s3_writes(rescore)
    reads = [
        json.dumps(s["Resource"])
        for s in _statements(template, _role_of_function(template, rescore))
        if any(a.startswith("s3:Get") for a in _as_list(s["Action"]))
    ]
    assert sorted(("/text/*" in r, "/models/*" in r) for r in reads) == [(False, True), (True, False)], reads
    assert all(("StorageDocuments" in r) == ("/text/*" in r) for r in reads), reads
    functions = _resources(template, "AWS::Lambda::Function").values()
    gate_fn = next(f for f in functions if f["Properties"].get("Handler") == gate)
    assert len(gate_fn["Properties"]["Layers"]) == 4  # base, numpy, ml (onnxruntime scores the models), training
    assert (
        gate_fn["Properties"]["Environment"]["Variables"]["DOCFLOW_TRAINING_CORPUS_PREFIX"] == c.TRAINING_CORPUS_PREFIX
    )
    # The rescore runs Classify's engine on Classify's layers, with the settings every pipeline function has
    rescore_fn = next(f for f in functions if f["Properties"].get("Handler") == rescore)
    classify_fn = next(f for f in functions if f["Properties"].get("Handler") == c.FUNCTIONS["Classify"].handler)
    assert rescore_fn["Properties"]["Layers"] == classify_fn["Properties"]["Layers"]
    assert rescore_fn["Properties"]["Timeout"] == 900
    variables = rescore_fn["Properties"]["Environment"]["Variables"]
    assert classify_fn["Properties"]["Environment"]["Variables"].items() <= variables.items()
