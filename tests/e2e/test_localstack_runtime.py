"""LocalStack in host mode (no Docker) with the docflow-host Lambda executor: the runtime the CDK stack deploys to.

Runs localstack/install.sh and start.sh once per session and always stop.sh at the end. No skip: CI has
the registries, so a failing install is a failure. Timings land in .localstack/e2e-timings.json.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
import zipfile
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

import pytest

from tests.e2e.conftest import ENDPOINT, LS_HOME, TIMINGS

# The first test pays for a cold install (pip + npm, ~5 min on 2 cores) inside its timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

ROLE_ARN = "arn:aws:iam::000000000000:role/docflow-e2e"  # LocalStack community does not enforce IAM
SUFFIX = uuid.uuid4().hex[:8]

HANDLER_SOURCE = '''
import os

ATTEMPTS = {}


class TransientProbeError(Exception):
    """Raised while a key has failures left: the state machine retries on this name."""


class ProbeFailure(Exception):
    pass


def handler(event, context):
    if "detail" in event:  # an S3 "Object Created" event delivered through EventBridge and Step Functions
        event = {"text": event["detail"]["object"]["key"]}
    key = event.get("key")
    if key is not None:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        if ATTEMPTS[key] <= event.get("fail_times", 0):
            raise TransientProbeError(f"attempt {ATTEMPTS[key]} of {key} fails")
    if event.get("fail"):
        raise ProbeFailure(f"asked to fail: {event['fail']}")
    print(f"processing {event['text']!r}")
    return {
        "processed": event["text"].upper(),
        "attempts": ATTEMPTS.get(key, 1),
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "omp_thread_limit": os.environ.get("OMP_THREAD_LIMIT"),
    }
'''


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def invoke(aws: Callable[[str], Any], function: str, event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    response = aws("lambda").invoke(FunctionName=function, Payload=json.dumps(event).encode())
    return response, json.loads(response["Payload"].read())


@pytest.fixture(scope="session")
def probe_function(aws: Callable[[str], Any]) -> str:
    name = f"docflow-probe-{SUFFIX}"
    aws("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Handler="docflow_probe.handler",
        Role=ROLE_ARN,
        Code={"ZipFile": zipped({"docflow_probe.py": HANDLER_SOURCE})},
        Timeout=30,
        MemorySize=256,
    )
    aws("lambda").get_waiter("function_active_v2").wait(FunctionName=name)
    return str(aws("lambda").get_function(FunctionName=name)["Configuration"]["FunctionArn"])


def test_lambda_runs_the_handler_and_reports_its_errors(aws: Callable[[str], Any], probe_function: str) -> None:
    # When the function is invoked for the first time (a cold start: a new host process)
    started = time.monotonic()
    response, payload = invoke(aws, probe_function, {"text": "hello docflow"})
    TIMINGS["lambda_cold_invoke_s"] = round(time.monotonic() - started, 3)
    # Then the handler ran on the event, with a Lambda context and the LocalStack endpoint in its environment
    assert "FunctionError" not in response, payload
    assert payload["processed"] == "HELLO DOCFLOW"
    assert payload["function_name"] == probe_function.rsplit(":", 1)[-1]
    assert payload["request_id"] == response["ResponseMetadata"]["RequestId"]
    assert 0 < payload["remaining_ms"] <= 30_000
    assert payload["endpoint"] == ENDPOINT
    assert payload["omp_thread_limit"] == "1"

    # When it is invoked again (warm: the same process)
    warm = []
    for i in range(10):
        started = time.monotonic()
        _, payload = invoke(aws, probe_function, {"text": f"warm {i}"})
        warm.append(time.monotonic() - started)
        assert payload["processed"] == f"WARM {i}"
    TIMINGS["lambda_warm_invoke_s"] = round(sorted(warm)[len(warm) // 2], 3)

    # When the handler raises, the invoke reports it as AWS does: FunctionError and the exception's class name
    response, payload = invoke(aws, probe_function, {"text": "x", "fail": "on purpose"})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ProbeFailure"
    assert payload["errorMessage"] == "asked to fail: on purpose"
    assert any("docflow_probe.py" in frame for frame in payload["stackTrace"])

    # And the function's output reached LocalStack's log retrieval (LogType=Tail) and the host log file
    response = aws("lambda").invoke(
        FunctionName=probe_function, Payload=json.dumps({"text": "logged"}).encode(), LogType="Tail"
    )
    tail = base64.b64decode(response["LogResult"]).decode()
    assert "processing 'logged'" in tail and "REPORT RequestId:" in tail
    name = probe_function.rsplit(":", 1)[-1]
    logs = [p.read_text() for p in (LS_HOME / "lambda-logs").glob(f"{name}-*.log")]
    assert any("processing 'logged'" in text for text in logs)


def test_lambda_layer_contents_are_importable(aws: Callable[[str], Any]) -> None:
    # Given a layer with a Python module under python/, as Lambda layers are laid out
    layer = aws("lambda").publish_layer_version(
        LayerName=f"docflow-e2e-{SUFFIX}",
        Content={"ZipFile": zipped({"python/docflow_layer_probe.py": "VALUE = 'from the layer'\n"})},
        CompatibleRuntimes=["python3.12"],
    )
    name = f"docflow-layer-probe-{SUFFIX}"
    aws("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Handler="app.handler",
        Role=ROLE_ARN,
        Code={
            "ZipFile": zipped(
                {"app.py": "import docflow_layer_probe\ndef handler(e, c):\n    return docflow_layer_probe.VALUE\n"}
            )
        },
        Layers=[layer["LayerVersionArn"]],
    )
    aws("lambda").get_waiter("function_active_v2").wait(FunctionName=name)
    # When the function imports it, then the executor put the layer on its import path
    response, payload = invoke(aws, name, {})
    assert "FunctionError" not in response, payload
    assert payload == "from the layer"


def test_dynamodb_put_and_get(aws: Callable[[str], Any]) -> None:
    ddb = aws("dynamodb")
    table = f"docflow-e2e-{SUFFIX}"
    started = time.monotonic()
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=table)
    TIMINGS["dynamodb_first_table_s"] = round(time.monotonic() - started, 3)
    ddb.put_item(TableName=table, Item={"pk": {"S": "doc-1"}, "status": {"S": "CLASSIFIED"}, "pages": {"N": "2"}})
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "doc-1"}}, ConsistentRead=True)["Item"]
    assert item == {"pk": {"S": "doc-1"}, "status": {"S": "CLASSIFIED"}, "pages": {"N": "2"}}


@pytest.fixture(scope="session")
def state_machine(aws: Callable[[str], Any], probe_function: str) -> str:
    definition = {
        "StartAt": "Process",
        "States": {
            "Process": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": probe_function, "Payload.$": "$"},
                "OutputPath": "$.Payload",
                "Retry": [
                    {"ErrorEquals": ["TransientProbeError"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 1}
                ],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "RecordFailure"}],
                "End": True,
            },
            "RecordFailure": {
                "Type": "Pass",
                "Parameters": {"status": "FAILED", "error.$": "$.error.Error", "cause.$": "$.error.Cause"},
                "End": True,
            },
        },
    }
    created = aws("stepfunctions").create_state_machine(
        name=f"docflow-e2e-{SUFFIX}", definition=json.dumps(definition), roleArn=ROLE_ARN
    )
    return str(created["stateMachineArn"])


def run_execution(aws: Callable[[str], Any], machine: str, event: dict[str, Any]) -> dict[str, Any]:
    sfn = aws("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps(event))["executionArn"]
    return wait_execution(aws, arn)


def wait_execution(aws: Callable[[str], Any], arn: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = aws("stepfunctions").describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        assert time.monotonic() < deadline, f"execution {arn} still RUNNING after {timeout} s"
        time.sleep(0.5)


def test_step_functions_lambda_invoke_with_retry_and_catch(aws: Callable[[str], Any], state_machine: str) -> None:
    # When the task fails twice with the retryable error, then succeeds
    started = time.monotonic()
    execution = run_execution(aws, state_machine, {"text": "retry me", "key": f"retry-{SUFFIX}", "fail_times": 2})
    TIMINGS["sfn_execution_with_2_retries_s"] = round(time.monotonic() - started, 3)
    # Then the execution succeeds with the Lambda's payload as output, after three attempts
    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert output["processed"] == "RETRY ME"
    assert output["attempts"] == 3
    history = aws("stepfunctions").get_execution_history(executionArn=execution["executionArn"])["events"]
    failures = [e for e in history if e["type"] == "TaskFailed"]
    assert [e["taskFailedEventDetails"]["error"] for e in failures] == ["TransientProbeError"] * 2

    # When the task fails with an error no Retry matches, the Catch routes it to RecordFailure
    execution = run_execution(aws, state_machine, {"text": "x", "fail": "permanent"})
    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert output["status"] == "FAILED"
    assert output["error"] == "ProbeFailure"
    assert json.loads(output["cause"])["errorMessage"] == "asked to fail: permanent"


def test_s3_object_created_reaches_the_state_machine_through_eventbridge(
    aws: Callable[[str], Any], state_machine: str
) -> None:
    s3, events, sfn = aws("s3"), aws("events"), aws("stepfunctions")
    bucket = f"docflow-e2e-{SUFFIX}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})
    rule = f"docflow-e2e-incoming-{SUFFIX}"
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": "incoming/"}]}},
            }
        ),
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "pipeline", "Arn": state_machine, "RoleArn": ROLE_ARN}])
    before = {e["executionArn"] for e in sfn.list_executions(stateMachineArn=state_machine)["executions"]}

    # When an object outside the prefix, then one inside it (a space and a '+' in its name), are uploaded
    key = "incoming/scan 2026+final.pdf"
    s3.put_object(Bucket=bucket, Key="elsewhere/ignored.pdf", Body=b"%PDF-1.4 ignored")
    started = time.monotonic()
    s3.put_object(Bucket=bucket, Key=key, Body=b"%PDF-1.4 probe")

    # Then exactly one execution starts, for the object under incoming/
    deadline = time.monotonic() + 60
    new: list[dict[str, Any]] = []
    while not new:
        assert time.monotonic() < deadline, "no execution started by the S3 upload within 60 s"
        time.sleep(0.5)
        new = [
            e
            for e in sfn.list_executions(stateMachineArn=state_machine)["executions"]
            if e["executionArn"] not in before
        ]
    execution = wait_execution(aws, new[0]["executionArn"])
    TIMINGS["s3_put_to_execution_done_s"] = round(time.monotonic() - started, 3)
    event = json.loads(execution["input"])
    assert event["source"] == "aws.s3" and event["detail-type"] == "Object Created"
    assert event["detail"]["bucket"]["name"] == bucket
    # Finding for the pipeline (LocalStack 2026.3.0): the key arrives URL-encoded with urllib.parse.quote —
    # '/' kept, space -> %20, '+' -> %2B: "incoming/scan%202026%2Bfinal.pdf". (AWS documents URL-encoded keys
    # for S3 notifications, with space -> '+'.) urllib.parse.unquote_plus decodes both forms correctly.
    received = event["detail"]["object"]["key"]
    print(f"S3 -> EventBridge object key as received: {received!r} (uploaded as {key!r})")
    assert received == "incoming/scan%202026%2Bfinal.pdf"
    assert unquote_plus(received) == key
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"])["processed"] == received.upper()
    time.sleep(2)  # the ignored object had its chance to start an execution too
    executions = sfn.list_executions(stateMachineArn=state_machine)["executions"]
    assert len([e for e in executions if e["executionArn"] not in before]) == 1
