"""cdk-nag: the AWS Solutions checks run on every synth; each acknowledged finding carries its reason."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from constructs import IConstruct

RULES = {
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": (
        "Lambda roles use AWSLambdaBasicExecutionRole only to write their own logs; all data access is granted "
        "per resource with grant_*."
    ),
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AmazonAPIGatewayPushToCloudWatchLogs]": (
        "API Gateway's account-level logging role: AWS's managed policy is the documented way to let API Gateway "
        "write execution and access logs."
    ),
    "AwsSolutions-APIG2": "Requests are validated by the FastAPI app (pydantic models, 422 with field errors); a "
    "Lambda proxy in front of it cannot validate multipart bodies any better.",
    "AwsSolutions-APIG3": "WAF is left to each deployment (its WebACL is an account/edge decision); every keyed "
    "client is throttled and capped by the usage plan.",
    "AwsSolutions-APIG4": "Clients authenticate with an API key bound to a usage plan (the seed's model); only "
    "/health, /docs and /openapi.json answer without one, and they return no data.",
    "AwsSolutions-COG4": "No Cognito user pool: API clients are services holding API keys, not end users.",
    "AwsSolutions-IAM5[Resource::*]": "X-Ray (PutTraceSegments, PutTelemetryRecords) and CloudWatch Logs delivery "
    "actions take no resource ARN, nor does sagemaker:ListTags in the createTrainingJob.sync integration's "
    "documented policy; tests/infra asserts no other action is granted on '*'.",
    "AwsSolutions-IAM5[Action::s3:GetObject*]": "CDK's grant_read action group (GetObject, GetObjectVersion, …), "
    "scoped to one key prefix.",
    "AwsSolutions-IAM5[Action::s3:GetBucket*]": "CDK's grant_read action group, on one bucket.",
    "AwsSolutions-IAM5[Action::s3:List*]": "CDK's grant_read action group: listing one bucket.",
    "AwsSolutions-IAM5[Action::s3:Abort*]": "CDK's grant_put action group: aborting multipart uploads it started.",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:training-job/*]": (
        "The training state machine names a new SageMaker job per execution (docflow-train-<time>-<hash>): "
        "it may create, describe and stop training jobs of this account and region, no other SageMaker resource."
    ),
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
    "/aws/sagemaker/TrainingJobs:*]": "The training job's own log streams, in SageMaker's fixed log group for "
    "training jobs (one stream per job, named by SageMaker).",
    "AwsSolutions-L1": "Python 3.12 is pinned on purpose: the layers are built from cp312 manylinux wheels.",
    "AwsSolutions-SQS3": "This queue is the dead-letter queue of the EventBridge rule's target; a DLQ of a DLQ "
    "would only move the problem.",
}
OBJECT_WILDCARD = (
    "object-level access to the keys under one prefix of one bucket (grant_read/grant_put with a key pattern)"
)
VERSION_WILDCARD = "Step Functions invokes the pipeline's own function and its versions (<function arn>:*)"


def arn_of(resource: IConstruct) -> str:
    """How cdk-nag names a resource's ARN in its findings: <LogicalId.Arn>."""
    stack = Stack.of(resource)
    cfn = resource.node.default_child
    assert isinstance(cfn, CfnResource)
    return f"<{stack.resolve(stack.get_logical_id(cfn))}.Arn>"


def acknowledge(
    stack: Stack,
    object_patterns: Iterable[tuple[IConstruct, str]],
    invoked_functions: Iterable[IConstruct],
    tables: Iterable[IConstruct],
) -> None:
    acks = [Acknowledgment(id=rule, reason=reason) for rule, reason in RULES.items()]
    acks += [
        Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{arn_of(bucket)}/{pattern}]", reason=OBJECT_WILDCARD)
        for bucket, pattern in object_patterns
    ]
    acks += [
        Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{arn_of(fn)}:*]", reason=VERSION_WILDCARD)
        for fn in invoked_functions
    ]
    acks += [
        Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::{arn_of(table)}/index/*]",
            reason="the table's own secondary indexes (grant_read_write_data): listing by status",
        )
        for table in tables
    ]
    Validations.of(stack).acknowledge(*acks)
