"""CDK assertions on every construct of the synthesized stack, and cdk-nag on the whole of it."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import Stack, Validations
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from docflow.pipeline import policy
from infra_cdk import constants as c

pytestmark = pytest.mark.infra


def _one(template: Template, type_: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    found = template.find_resources(type_, {"Properties": props} if props else None)
    assert len(found) == 1, f"expected one {type_} matching {props}, found {len(found)}"
    return next(iter(found.values()))


def _definition(template: Template) -> dict[str, Any]:
    machines = template.find_resources("AWS::StepFunctions::StateMachine")
    sm = next(v for k, v in machines.items() if k.startswith("PipelineStateMachine"))  # not the training loop
    parts = sm["Properties"]["DefinitionString"]["Fn::Join"][1]
    # Tokens (function ARNs) are joined into JSON strings; a placeholder keeps the JSON parseable.
    text = "".join(p if isinstance(p, str) else "TOKEN" for p in parts)
    return json.loads(text)


def test_buckets_block_public_access_enforce_tls_and_encrypt(template: Template) -> None:
    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 3  # documents, models, access logs
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    policies = template.find_resources("AWS::S3::BucketPolicy")
    tls_denies = [
        s
        for p in policies.values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    assert len(tls_denies) == 3


def test_documents_bucket_sends_events_to_eventbridge_and_ages_incoming(template: Template) -> None:
    documents = _one(
        template,
        "AWS::S3::Bucket",
        {"NotificationConfiguration": {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}},
    )
    rules = documents["Properties"]["LifecycleConfiguration"]["Rules"]
    incoming = next(r for r in rules if r.get("Prefix") == "incoming/")
    assert incoming["Status"] == "Enabled"
    assert incoming["Transitions"][0]["StorageClass"] == "STANDARD_IA"
    assert documents["Properties"]["VersioningConfiguration"]["Status"] == "Enabled"
    # No custom resources: LocalStack community cannot run them
    assert not template.find_resources("Custom::S3BucketNotifications")
    assert not template.find_resources("AWS::CloudFormation::CustomResource")


def test_table_is_on_demand_with_pitr_and_status_index(template: Template) -> None:
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [Match.object_like({"IndexName": "by-status"})],
        },
    )


def test_rule_matches_incoming_prefix_and_targets_pipeline_with_dlq(template: Template) -> None:
    rule = _one(template, "AWS::Events::Rule", {"EventPattern": {"source": ["aws.s3"]}})
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "incoming/"}]
    target = rule["Properties"]["Targets"][0]
    assert "Ref" in target["Arn"]  # the state machine
    assert "DeadLetterConfig" in target
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 20


def test_functions_run_python312_with_one_role_each_and_single_threaded_ocr(template: Template) -> None:
    functions = template.find_resources("AWS::Lambda::Function")
    training_loop = {spec.handler for spec in c.TRAINING_FUNCTIONS.values()}  # test_training_stack's
    pipeline = {
        k: v
        for k, v in functions.items()
        if v["Properties"].get("Handler", "").startswith("docflow.") and v["Properties"]["Handler"] not in training_loop
    }
    assert len(pipeline) == 9  # seven pipeline steps, the drift job and the API
    roles = {json.dumps(f["Properties"]["Role"]) for f in pipeline.values()}
    assert len(roles) == len(pipeline)
    for fn in pipeline.values():
        props = fn["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["Environment"]["Variables"]["OMP_THREAD_LIMIT"] == "1"
        assert props["Environment"]["Variables"]["DOCFLOW_BACKEND"] == "aws"
        assert props["TracingConfig"] == {"Mode": "Active"}
    extract = next(f for f in pipeline.values() if f["Properties"]["Handler"].endswith("extract_text.handler"))
    assert extract["Properties"]["Timeout"] == 900


def test_state_machine_retry_and_catch_come_from_the_policy(template: Template) -> None:
    definition = _definition(template)
    states = definition["States"]
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    assert {"Validate document", "Extract text", "Classify document", "Record failure"} <= set(tasks)
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
    for name, task in tasks.items():
        assert task["Retry"] == expected_retry, name
        if name != "Record failure":
            assert task["Catch"] == [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Record failure"}
            ], name
    assert states["Record failure"]["Next"] == "Document failed"
    assert states["Document failed"]["Type"] == "Fail"
    # Long PDFs go through a bounded Map over page ranges
    page_map = states["Extract page ranges"]
    assert page_map["Type"] == "Map"
    assert page_map["ItemsPath"] == "$.page_ranges"
    assert 1 <= page_map["MaxConcurrency"] <= 40
    assert page_map["Catch"][0]["Next"] == "Record failure"


def test_state_machine_logs_and_traces(template: Template) -> None:
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL", "IncludeExecutionData": False}),
        },
    )


def test_iam_is_scoped_to_the_stack_resources(template: Template) -> None:
    for policy_res in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy_res["Properties"]["PolicyDocument"]["Statement"]:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            # No bare "*" except for X-Ray and log delivery actions, which take no resource ARN, and the
            # training loop's sagemaker:ListTags (the createTrainingJob.sync integration's documented policy)
            if "*" in resources:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert all(a.startswith(("xray:", "logs:")) or a == "sagemaker:ListTags" for a in actions), statement


def test_cdk_nag_passes_and_every_acknowledgement_has_a_reason(stack_and_template: tuple[Stack, Template]) -> None:
    # The session fixture synthesized with AwsSolutionsChecks: reaching here means no unacknowledged finding.
    stack, _ = stack_and_template
    acks = [
        entry.data
        for entry in stack.node.metadata
        if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY and entry.data
    ]
    reasons = {k: v for data in acks for k, v in data.items()}
    assert reasons, "the stack acknowledges its cdk-nag findings explicitly"
    assert all(len(str(reason)) > 30 for reason in reasons.values()), reasons


def test_cdk_nag_fails_synth_on_a_real_violation() -> None:
    # A control: the same plugin refuses an unencrypted, public, unlogged bucket.
    from aws_cdk import aws_s3 as s3

    app = cdk.App()
    bad = Stack(app, "Bad")
    s3.Bucket(bad, "Open", block_public_access=s3.BlockPublicAccess(block_public_policy=False))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(Exception, match="AwsSolutions-S2"):
        app.synth()


def test_api_requires_a_key_except_on_health_docs_and_the_review_pages_files(template: Template) -> None:
    methods = template.find_resources("AWS::ApiGateway::Method")
    resources = template.find_resources("AWS::ApiGateway::Resource")

    def path_of(logical: str | None) -> str:
        if logical not in resources:
            return ""
        props = resources[logical]["Properties"]
        return f"{path_of(props['ParentId'].get('Ref'))}/{props['PathPart']}"

    keyless, keyed = set(), set()
    for method in methods.values():
        props = method["Properties"]
        path = path_of(props["ResourceId"].get("Ref")) or "/"
        (keyed if props.get("ApiKeyRequired", False) else keyless).add((path, props["HttpMethod"]))
    assert keyless == {
        ("/health", "GET"),
        ("/docs", "GET"),
        ("/openapi.json", "GET"),
        ("/review", "GET"),  # the page: no data in it
        ("/review/static/{proxy+}", "GET"),  # its script and stylesheet
    }
    assert {("/review/{proxy+}", "ANY"), ("/{proxy+}", "ANY"), ("/", "ANY")} <= keyed  # review/queue needs the key
    plan = _one(template, "AWS::ApiGateway::UsagePlan")["Properties"]
    assert plan["Throttle"]["RateLimit"] > 0 and plan["Quota"]["Period"] == "DAY"
    template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    api = _one(template, "AWS::ApiGateway::RestApi")["Properties"]
    assert "multipart/form-data" in api["BinaryMediaTypes"]


def test_api_stage_logs_access_but_never_bodies(template: Template) -> None:
    stage = _one(template, "AWS::ApiGateway::Stage")["Properties"]
    assert stage["AccessLogSetting"]["DestinationArn"]
    assert stage["TracingEnabled"] is True
    assert all(not m.get("DataTraceEnabled", False) for m in stage["MethodSettings"])


def test_api_function_fits_in_api_gateways_time_budget(template: Template) -> None:
    api_fn = _one(template, "AWS::Lambda::Function", {"Handler": "docflow.handlers.api.handler"})
    assert api_fn["Properties"]["Timeout"] <= 29
    assert len(api_fn["Properties"]["Layers"]) == 5


def test_validate_and_record_failure_are_told_the_execution_that_owns_the_work(template: Template) -> None:
    # A retried Validate (or RecordFailure after it) knows the document record its own execution wrote.
    states = _definition(template)["States"]
    for name in ("Validate document", "Record failure"):
        assert states[name]["Parameters"]["Payload"] == {"event.$": "$", "owner.$": "$$.Execution.Id"}, name
    assert states["Extract text"]["Parameters"]["Payload.$"] == "$"
