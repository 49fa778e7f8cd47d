"""The synthesized state machine, executed by a real ASL engine (moto's port of LocalStack's
interpreter), with every Lambda task served by the project's real handlers against moto S3/DynamoDB."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import threading
import time
import traceback
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction

from docflow.samples import MEMO, text_pdf
from infra_cdk import constants as c
from tests.aws_fixtures import BUCKET, TABLE, create_resources, object_created
from tests.infra.synth import synth_stack
from tests.integration.test_handlers import FakeLambdaContext

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGION = "us-east-1"


class Faults:
    """Errors a function raises before running, as a misbehaving Lambda would: {function: [error, …]}; and
    errors reported after it ran (`after`): its work done, the invocation reported failed all the same."""

    def __init__(self) -> None:
        self.plan: dict[str, list[Exception]] = {}
        self.after: dict[str, list[Exception]] = {}
        self.calls: dict[str, int] = {}


@pytest.fixture
def faults() -> Faults:
    return Faults()


def _serve_with_real_handlers(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    by_handler = {spec.handler: name for name, spec in c.FUNCTIONS.items()}
    # On Lambda every invocation has a process of its own; here moto runs Map iterations in threads of
    # one process, and pdfium is not thread-safe: one invocation at a time, as separate sandboxes would be.
    one_sandbox_at_a_time = threading.Lock()

    def invoke(self: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        with one_sandbox_at_a_time:
            return _invoke(self, event)

    def _invoke(self: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        name = by_handler[self.handler]
        faults.calls[name] = faults.calls.get(name, 0) + 1
        try:
            if faults.plan.get(name):
                raise faults.plan[name].pop(0)
            module, func = self.handler.rsplit(".", 1)
            with _function_environment(self.environment_vars or {}):
                result = getattr(importlib.import_module(module), func)(event, FakeLambdaContext(function_name=name))
            if faults.after.get(name):
                raise faults.after[name].pop(0)
            return json.dumps(result), False, ""
        except Exception as exc:  # what the Lambda runtime reports for an unhandled exception
            error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            return json.dumps(error), True, ""

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", invoke)


@contextmanager
def _function_environment(variables: dict[str, str]) -> Iterator[None]:
    """The function's own Environment (set with create/update_function_configuration) for one invocation,
    over the process's; settings and context are rebuilt from it, as a fresh sandbox would."""
    if not variables:
        yield
        return
    from docflow.context import get_context
    from docflow.settings import get_settings

    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    get_settings.cache_clear()
    get_context.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
        get_context.cache_clear()


def _definition_with(arns: dict[str, str]) -> str:
    _stack, template = synth_stack()
    functions = template.find_resources("AWS::Lambda::Function")
    by_handler = {spec.handler: name for name, spec in c.FUNCTIONS.items()}
    logical_to_name = {
        logical: by_handler[res["Properties"]["Handler"]]
        for logical, res in functions.items()
        if res["Properties"].get("Handler") in by_handler
    }
    machines = template.find_resources("AWS::StepFunctions::StateMachine")
    sm = next(v for k, v in machines.items() if k.startswith("PipelineStateMachine"))  # not the training loop
    parts = sm["Properties"]["DefinitionString"]["Fn::Join"][1]
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part == {"Ref": "AWS::Partition"}:
            out.append("aws")
        else:
            logical = part["Fn::GetAtt"][0]
            out.append(arns[logical_to_name[logical]])
    return "".join(out)


@pytest.fixture
def machine(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    monkeypatch.setenv("DOCFLOW_LARGE_PDF_PAGES", "4")
    monkeypatch.setenv("DOCFLOW_PAGES_PER_CHUNK", "2")
    _serve_with_real_handlers(faults, monkeypatch)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        create_resources()
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("placeholder.py", "")
        arns = {}
        for name, spec in c.FUNCTIONS.items():
            arns[name] = lam.create_function(
                FunctionName=f"docflow-{name}",
                Runtime="python3.12",
                Role=role,
                Handler=spec.handler,
                Code={"ZipFile": buf.getvalue()},
            )["FunctionArn"]
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(name="pipeline", definition=_definition_with(arns), roleArn=role)[
            "stateMachineArn"
        ]
        yield {"sfn": sfn, "arn": arn, "s3": boto3.client("s3", region_name=REGION), "lambda": lam}


def _execute(machine: dict[str, Any], key: str, body: bytes, timeout: float = 180) -> tuple[str, dict[str, Any]]:
    machine["s3"].put_object(Bucket=BUCKET, Key=key, Body=body)
    event = object_created(key, s3=machine["s3"])
    execution = machine["sfn"].start_execution(stateMachineArn=machine["arn"], input=json.dumps(event))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = machine["sfn"].describe_execution(executionArn=execution["executionArn"])
        if desc["status"] != "RUNNING":
            history = machine["sfn"].get_execution_history(executionArn=execution["executionArn"])["events"]
            return desc["status"], {"output": json.loads(desc.get("output") or "null"), "history": history}
        time.sleep(0.2)
    raise AssertionError(f"execution still running after {timeout}s")


def _record(document_id: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
    return table.get_item(Key={"pk": document_id, "sk": "DOCUMENT"})["Item"]


def _entered(history: list[dict[str, Any]]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]


def test_happy_path_classifies(machine: dict[str, Any]) -> None:
    status, run = _execute(machine, "incoming/memo.pdf", text_pdf([MEMO]))
    assert status == "SUCCEEDED"
    out = run["output"]
    assert out["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert _record(out["document_id"])["status"] == out["status"]
    assert _entered(run["history"]) == [
        "Validate document",
        "Accepted?",
        "Long PDF?",
        "Extract text",
        "Classify document",
        "Done",
    ]


def test_rejected_document_is_recorded_and_succeeds(machine: dict[str, Any]) -> None:
    status, run = _execute(machine, "incoming/evil.pdf", b"\x7fELF\x02\x01\x01" + b"\0" * 100)
    assert status == "SUCCEEDED"
    assert run["output"]["status"] == "REJECTED"
    record = _record(run["output"]["document_id"])
    assert record["status"] == "REJECTED" and record["code"] == "UNSUPPORTED_TYPE"
    assert "Record rejection or duplicate" in _entered(run["history"])


def test_transient_failure_is_retried_then_succeeds(machine: dict[str, Any], faults: Faults) -> None:
    from docflow.errors import TransientError

    faults.plan["ExtractText"] = [TransientError("throttled"), TransientError("throttled again")]
    status, run = _execute(machine, "incoming/memo.pdf", text_pdf([MEMO]))
    assert status == "SUCCEEDED"
    assert faults.calls["ExtractText"] == 3
    assert run["output"]["status"] in ("CLASSIFIED", "NEEDS_REVIEW")


def test_permanent_failure_is_caught_and_recorded_failed(machine: dict[str, Any], faults: Faults) -> None:
    from docflow.errors import PermanentError

    faults.plan["Classify"] = [PermanentError("model file is corrupt")]
    status, run = _execute(machine, "incoming/memo.pdf", text_pdf([MEMO]))
    assert status == "FAILED"
    assert faults.calls["Classify"] == 1  # not retried
    assert _entered(run["history"])[-2:] == ["Record failure", "Document failed"]
    validated = next(
        json.loads(e["taskSucceededEventDetails"]["output"])["Payload"]
        for e in run["history"]
        if "taskSucceededEventDetails" in e
    )
    record = _record(validated["document_id"])
    assert record["status"] == "FAILED"
    assert record["code"] == "PermanentError"
    assert record["reason"] == "model file is corrupt"


def test_validate_retried_after_its_work_landed_processes_the_document(machine: dict[str, Any], faults: Faults) -> None:
    # Validate created the document record, then its invocation was reported failed (a lost reply): the
    # Retry runs it again in the same execution, which owns that record ($$.Execution.Id), so carries on.
    from docflow.errors import TransientError

    faults.after["Validate"] = [TransientError("the reply was lost")]
    status, run = _execute(machine, "incoming/memo.pdf", text_pdf([MEMO]))
    assert status == "SUCCEEDED"
    assert faults.calls["Validate"] == 2
    out = run["output"]
    assert out["replay"] is False and out["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert _entered(run["history"])[-2:] == ["Classify document", "Done"]
    record = _record(out["document_id"])
    assert record["status"] == out["status"]
    [execution] = machine["sfn"].list_executions(stateMachineArn=machine["arn"])["executions"]
    assert record["owner"] == out["owner"] == execution["executionArn"]


def test_validate_failing_after_it_created_the_record_leaves_it_failed(machine: dict[str, Any], faults: Faults) -> None:
    # The Catch hands RecordFailure the S3 event, wrapped with the execution's id: the PROCESSING record
    # that this execution's Validate created is its own to mark FAILED (not left PROCESSING for ever).
    from docflow.errors import PermanentError

    faults.after["Validate"] = [PermanentError("validate crashed after its write")]
    body = text_pdf([MEMO])
    status, run = _execute(machine, "incoming/memo.pdf", body)
    assert status == "FAILED"
    assert _entered(run["history"])[-2:] == ["Record failure", "Document failed"]
    record = _record(hashlib.sha256(body).hexdigest())
    assert record["status"] == "FAILED" and record["code"] == "PermanentError"
    assert record["reason"] == "validate crashed after its write"


def test_long_pdf_is_split_into_page_ranges(machine: dict[str, Any], faults: Faults) -> None:
    # 5 pages > DOCFLOW_LARGE_PDF_PAGES=4, 2 pages per chunk: ranges 1-2, 3-4, 5-5
    status, run = _execute(machine, "incoming/long.pdf", text_pdf([f"{MEMO}\nPage {i}" for i in range(1, 6)]))
    assert status == "SUCCEEDED", run
    assert faults.calls["ExtractPages"] == 3
    assert "ExtractText" not in faults.calls
    out = run["output"]
    assert out["pages"] == 5 and out["text_source"] == "pdf_text"
    assert out["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    entered = _entered(run["history"])
    assert "Extract page ranges" in entered and "Merge page ranges" in entered
