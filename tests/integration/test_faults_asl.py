"""DOCFLOW_FAULTS in the synthesized state machine (real ASL engine, real handlers, moto S3/DynamoDB),
set as a deployed function's own environment: the state machine's Retry absorbs transient faults, its
Catch records a permanent one FAILED, and the upload stays in the bucket."""

from __future__ import annotations

import hashlib
from typing import Any

import boto3
import pytest

from docflow.faults import counter_name
from docflow.samples import MEMO, text_pdf
from tests.aws_fixtures import BUCKET, TABLE
from tests.integration import test_state_machine_asl as asl
from tests.integration.test_state_machine_asl import Faults, _entered, _execute, _record

# The state machine harness's fixtures, shared with test_state_machine_asl.
machine = asl.machine
faults = asl.faults

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MEMO_PDF = text_pdf([MEMO])
MEMO_ID = hashlib.sha256(MEMO_PDF).hexdigest()


def _set_function_env(machine: dict[str, Any], function: str, variables: dict[str, str]) -> None:
    machine["lambda"].update_function_configuration(
        FunctionName=f"docflow-{function}", Environment={"Variables": variables}
    )


def _counter(name: str) -> int:
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(TABLE)
    item = table.get_item(Key={"pk": f"COUNTER#{name}", "sk": "COUNTER"}).get("Item")
    return int(item["n"]) if item else 0


def _failed_attempts(history: list[dict[str, Any]]) -> list[str]:
    return [e["taskFailedEventDetails"]["error"] for e in history if "taskFailedEventDetails" in e]


def test_transient_faults_from_the_function_environment_are_retried(machine: dict[str, Any], faults: Faults) -> None:
    _set_function_env(machine, "ExtractText", {"DOCFLOW_FAULTS": "ExtractText=transient:2"})
    status, run = _execute(machine, "incoming/memo.pdf", MEMO_PDF)
    assert status == "SUCCEEDED"
    assert run["output"]["status"] in ("CLASSIFIED", "NEEDS_REVIEW")
    assert faults.calls["ExtractText"] == 3  # two injected failures, then the real step
    assert faults.calls["Validate"] == 1 and faults.calls["Classify"] == 1  # only ExtractText has the setting
    assert _failed_attempts(run["history"]) == ["TransientError", "TransientError"]
    assert _counter(counter_name("ExtractText", MEMO_ID)) == 2
    assert _record(MEMO_ID)["status"] == run["output"]["status"]


def test_permanent_fault_is_caught_recorded_failed_and_the_upload_kept(machine: dict[str, Any], faults: Faults) -> None:
    _set_function_env(machine, "Classify", {"DOCFLOW_FAULTS": "Classify=permanent"})
    status, run = _execute(machine, "incoming/memo.pdf", MEMO_PDF)
    assert status == "FAILED"
    assert faults.calls["Classify"] == 1  # not retried
    assert _failed_attempts(run["history"]) == ["PermanentError"]
    assert _entered(run["history"])[-2:] == ["Record failure", "Document failed"]
    record = _record(MEMO_ID)
    assert record["status"] == "FAILED"
    assert record["code"] == "PermanentError"
    assert record["reason"] == "injected permanent fault in Classify (DOCFLOW_FAULTS)"
    assert machine["s3"].get_object(Bucket=BUCKET, Key="incoming/memo.pdf")["Body"].read() == MEMO_PDF
    assert _counter(counter_name("Classify", MEMO_ID)) == 1


def test_a_failure_in_validate_is_recorded_on_the_content_from_the_s3_event(
    machine: dict[str, Any], faults: Faults
) -> None:
    # RecordFailure then gets the S3 event itself (the Catch adds $.error to Validate's input)
    _set_function_env(machine, "Validate", {"DOCFLOW_FAULTS": "Validate=permanent"})
    status, run = _execute(machine, "incoming/memo.pdf", MEMO_PDF)
    assert status == "FAILED"
    assert _entered(run["history"])[-2:] == ["Record failure", "Document failed"]
    # Keyed by the content (the bytes could be read): the document an API client polls, and a retry finds
    record = _record(MEMO_ID)
    assert record["status"] == "FAILED" and record["code"] == "PermanentError"
    assert record["reason"] == "injected permanent fault in Validate (DOCFLOW_FAULTS)"
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(TABLE)
    [upload] = [i for i in table.scan()["Items"] if i["sk"].startswith("UPLOAD#")]
    version = machine["s3"].head_object(Bucket=BUCKET, Key="incoming/memo.pdf")["VersionId"]
    assert (upload["pk"], upload["status"], upload["version_id"]) == (MEMO_ID, "FAILED", version)
