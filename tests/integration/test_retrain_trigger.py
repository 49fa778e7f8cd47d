"""New labels through the API's service on moto DynamoDB and EventBridge: every Nth new label puts the event the
training loop's rule matches (the rule here delivers to SQS, where the test reads it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from docflow.api import review
from docflow.context import build_context
from docflow.records import DocumentRecord
from docflow.retrain import EVENT_DETAIL_TYPE, EVENT_SOURCE, NEW_LABELS_COUNTER
from docflow.settings import Settings
from docflow.values import Status
from tests.aws_fixtures import BUCKET, TABLE, create_resources

pytestmark = pytest.mark.integration

REGION = "us-east-1"


@pytest.fixture
def bus() -> Iterator[dict[str, Any]]:
    with mock_aws():
        create_resources()
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="retrain-events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events = boto3.client("events", region_name=REGION)
        pattern = {"source": [EVENT_SOURCE], "detail-type": [EVENT_DETAIL_TYPE]}  # the CDK rule's pattern
        events.put_rule(Name="on-new-labels", EventPattern=json.dumps(pattern))
        events.put_targets(Rule="on-new-labels", Targets=[{"Id": "q", "Arn": queue_arn}])
        yield {"sqs": sqs, "queue": queue}


def _received(bus: dict[str, Any]) -> list[dict[str, Any]]:
    messages = bus["sqs"].receive_message(QueueUrl=bus["queue"], MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_every_second_new_label_sends_the_retraining_event(bus: dict[str, Any]) -> None:
    settings = Settings(backend="aws", documents_bucket=BUCKET, table_name=TABLE, retrain_label_threshold=2)
    ctx = build_context(settings)
    for doc in ("a", "b", "c"):
        ctx.records.put_document(DocumentRecord(document_id=doc * 64, status=Status.NEEDS_REVIEW, source="up"))

    review.decide(ctx, "a" * 64, "memo", "tester", None)
    review.decide(ctx, "a" * 64, "memo", "tester", None)  # the same label again is not a new example
    assert ctx.records.get_counter(NEW_LABELS_COUNTER) == 1
    assert _received(bus) == []

    review.decide(ctx, "b" * 64, "letter", "tester", None)
    assert ctx.records.get_counter(NEW_LABELS_COUNTER) == 2
    events = _received(bus)
    assert len(events) == 1
    assert events[0]["source"] == EVENT_SOURCE and events[0]["detail-type"] == EVENT_DETAIL_TYPE
    assert events[0]["detail"] == {"labels_counted": 2, "threshold": 2}
    assert ctx.records.get_document("b" * 64).label == "letter"  # type: ignore[union-attr]


def test_a_failing_event_bus_never_fails_the_label(bus: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(
        backend="aws",
        documents_bucket=BUCKET,
        table_name=TABLE,
        retrain_label_threshold=1,
        event_bus_name="no-such-bus",
    )
    ctx = build_context(settings)
    ctx.records.put_document(DocumentRecord(document_id="d" * 64, status=Status.CLASSIFIED, source="up"))
    review.decide(ctx, "d" * 64, "memo", "tester", None)
    assert ctx.records.get_document("d" * 64).label == "memo"  # type: ignore[union-attr]
    assert _received(bus) == []
    assert "counting the new label for retraining failed" in caplog.text and "no-such-bus" in caplog.text
