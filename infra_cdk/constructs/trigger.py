"""S3 "Object Created" under incoming/ → EventBridge rule → StartExecution, with a DLQ on the target."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra_cdk import constants as c


class UploadTrigger(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, bucket: s3.IBucket, state_machine: sfn.IStateMachine
    ) -> None:
        super().__init__(scope, construct_id)
        # Events EventBridge could not deliver (throttling, permissions) land here, not nowhere.
        self.dlq = sqs.Queue(
            self,
            "DeadLetters",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.rule = events.Rule(
            self,
            "OnUpload",
            description="Start the document pipeline for each object created under incoming/",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": [{"prefix": c.INCOMING_PREFIX}]},
                },
            ),
        )
        self.rule.add_target(
            targets.SfnStateMachine(
                state_machine,
                dead_letter_queue=self.dlq,
                retry_attempts=20,
                max_event_age=Duration.hours(24),
            )
        )
