"""Hostile inputs through the synthesized state machine: moto's ASL engine, the project's real handlers, moto
S3 and DynamoDB. Each case's bytes are put under incoming/ with its hostile key (control characters, %XX and
+, Unicode with a right-to-left override, 1 022 bytes, ../) and the S3 "Object Created" event (the shape
of tests/events/s3_object_created.json with the version put, key URL-encoded as S3 sends it) starts one
execution.

Every execution must SUCCEED (a REJECTED or DUPLICATE document is an outcome, not a failure) with the case's
exact outcome in its output and in the DynamoDB record, within 30 s.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra_cdk import constants as c
from tests.aws_fixtures import BUCKET, TABLE, create_resources, object_created
from tests.hostile.cases import BY_NAME, cases_for, outcome_problems
from tests.integration.test_state_machine_asl import REGION, Faults, _definition_with, _serve_with_real_handlers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CASES = cases_for("asl")
PER_EXECUTION_LIMIT_S = 30


@pytest.fixture(scope="module")
def executions() -> Iterator[dict[str, Any]]:
    from docflow.context import get_context
    from docflow.settings import get_settings

    results: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DOCFLOW_BACKEND", "aws")
        env.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
        env.setenv("DOCFLOW_TABLE_NAME", TABLE)
        get_settings.cache_clear()
        get_context.cache_clear()
        _serve_with_real_handlers(Faults(), env)
        try:
            with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
                create_resources()
                role = boto3.client("iam", region_name=REGION).create_role(
                    RoleName="fn", AssumeRolePolicyDocument="{}"
                )["Role"]["Arn"]
                lam = boto3.client("lambda", region_name=REGION)
                code = io.BytesIO()
                with zipfile.ZipFile(code, "w") as zf:
                    zf.writestr("placeholder.py", "")
                arns = {
                    name: lam.create_function(
                        FunctionName=f"docflow-{name}",
                        Runtime="python3.12",
                        Role=role,
                        Handler=spec.handler,
                        Code={"ZipFile": code.getvalue()},
                    )["FunctionArn"]
                    for name, spec in c.FUNCTIONS.items()
                }
                sfn = boto3.client("stepfunctions", region_name=REGION)
                machine = sfn.create_state_machine(name="pipeline", definition=_definition_with(arns), roleArn=role)[
                    "stateMachineArn"
                ]
                s3 = boto3.client("s3", region_name=REGION)
                table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
                # Originals first: which upload is the DUPLICATE is then fixed.
                for number, case in enumerate(sorted(CASES, key=lambda c: c.duplicate_of is not None)):
                    data = case.data()
                    s3.put_object(Bucket=BUCKET, Key=case.s3_key, Body=data)
                    started = time.monotonic()
                    arn = sfn.start_execution(
                        stateMachineArn=machine,
                        name=f"hostile-{number}",
                        input=json.dumps(object_created(case.s3_key, s3=s3)),
                    )["executionArn"]
                    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
                        assert time.monotonic() - started < 120, f"{case.name}: execution still running"
                        time.sleep(0.1)
                    output = json.loads(desc.get("output") or "null") or {}
                    record = None
                    if output.get("document_id"):
                        record = table.get_item(Key={"pk": output["document_id"], "sk": "DOCUMENT"}).get("Item")
                    results[case.name] = {
                        "status": desc["status"],
                        "error": desc.get("error"),
                        "cause": (desc.get("cause") or "")[:2000],
                        "seconds": time.monotonic() - started,
                        "output": output,
                        "record": record,
                        "object_kept": s3.head_object(Bucket=BUCKET, Key=case.s3_key)["ContentLength"] == len(data),
                    }
        finally:
            get_settings.cache_clear()
            get_context.cache_clear()
    yield results


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_each_case_has_its_exact_outcome(executions: dict[str, Any], name: str) -> None:
    case = BY_NAME[name]
    got = executions[name]
    out = got["output"]
    assert got["status"] == "SUCCEEDED", got
    assert got["seconds"] < PER_EXECUTION_LIMIT_S
    assert got["object_kept"]
    # The key the handler read back from the URL-encoded event is the object's exact key.
    assert out["ref"]["key"] == case.s3_key and out["ref"]["source"] == f"s3://{BUCKET}/{case.s3_key}"
    assert not outcome_problems(case, out["status"], out.get("code"), out.get("reason"), out.get("text_source"))
    if case.duplicate_of:
        assert out["duplicate_of"] == executions[case.duplicate_of]["output"]["document_id"] == out["document_id"]
        return
    record = got["record"]
    assert record is not None and record["status"] == out["status"] and record.get("code") == out.get("code")
