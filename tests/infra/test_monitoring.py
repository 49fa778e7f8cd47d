"""The monitoring construct in the synthesized template: dashboard, alarms to SNS, drift schedule, tracing."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from docflow.pipeline import flow
from infra_cdk import constants as c

pytestmark = pytest.mark.infra

EMF_METRICS = (
    "DocumentsUploaded",
    "DocumentsProcessed",
    "StepSeconds",
    "PipelineSeconds",
    "OcrConfidence",
    "OcrSecondsPerPage",
    "PredictionConfidence",
    "Predictions",
    "DriftScore",
)


def _joined(value: Any) -> str:
    """A CloudFormation string that may be an Fn::Join of literals and tokens; tokens become TOKEN."""
    if isinstance(value, str):
        return value
    parts = value["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "TOKEN" for p in parts)


def _ref(template: Template, type_: str, props: dict[str, Any]) -> str:
    found = template.find_resources(type_, {"Properties": props})
    assert len(found) == 1, f"expected one {type_} matching {props}, found {len(found)}"
    return next(iter(found))


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    return {
        props["AlarmDescription"]: props
        for props in (a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values())
    }


def _alarm(template: Template, starts: str) -> dict[str, Any]:
    found = [props for description, props in _alarms(template).items() if description.startswith(starts)]
    assert len(found) == 1, (starts, list(_alarms(template)))
    return found[0]


@pytest.fixture(scope="module")
def topic(template: Template) -> str:
    return _ref(template, "AWS::SNS::Topic", {"DisplayName": "Docflow alarms"})


@pytest.fixture(scope="module")
def dashboard(template: Template) -> dict[str, Any]:
    dashboards = template.find_resources("AWS::CloudWatch::Dashboard")
    assert len(dashboards) == 1
    body: dict[str, Any] = json.loads(_joined(next(iter(dashboards.values()))["Properties"]["DashboardBody"]))
    return body


def _widget(dashboard: dict[str, Any], title_starts: str) -> dict[str, Any]:
    found = [w["properties"] for w in dashboard["widgets"] if w["properties"].get("title", "").startswith(title_starts)]
    assert len(found) == 1, title_starts
    return found[0]


def _metric_rows(widget: dict[str, Any]) -> list[list[Any]]:
    return [row for row in widget["metrics"] if isinstance(row[0], str)]


def test_alarm_topic_is_encrypted_and_takes_only_tls_and_this_accounts_alarms(template: Template, topic: str) -> None:
    props = template.find_resources("AWS::SNS::Topic")[topic]["Properties"]
    key = props["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key_props = template.find_resources("AWS::KMS::Key")[key]["Properties"]
    assert key_props["EnableKeyRotation"] is True
    # CloudWatch may use the key (an AWS-managed SNS key would silently drop every alarm notification)
    key_statements = key_props["KeyPolicy"]["Statement"]
    assert any(
        s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} and "kms:GenerateDataKey*" in s["Action"]
        for s in key_statements
    )
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in template.find_resources("AWS::SNS::TopicPolicy").values()
        if {"Ref": topic} in p["Properties"]["Topics"]
    ]
    assert len(policies) == 1
    statements = {s["Sid"]: s for s in policies[0]}
    deny = statements["AllowPublishThroughSSLOnly"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    allow = statements["AllowThisAccountsAlarmsToPublish"]
    assert allow["Effect"] == "Allow" and allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Action"] == "sns:Publish" and allow["Resource"] == {"Ref": topic}
    assert "aws:SourceAccount" in allow["Condition"]["StringEquals"]


def test_alarm_email_comes_from_context() -> None:
    from infra_cdk.stack import DocflowStack

    app = cdk.App(context={"stage": "test", c.ALARM_EMAIL_CONTEXT: "ops@example.com"})
    stack = DocflowStack(app, "Docflow-email")
    template = Template.from_stack(stack)
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"})


def test_no_email_subscription_without_the_context(template: Template) -> None:
    assert template.find_resources("AWS::SNS::Subscription") == {}


def test_every_alarm_notifies_the_topic_on_alarm_and_ok(template: Template, topic: str) -> None:
    alarms = _alarms(template)
    assert len(alarms) >= 8
    for description, props in alarms.items():
        assert props["AlarmActions"] == [{"Ref": topic}], description
        assert props["OKActions"] == [{"Ref": topic}], description
        assert props["TreatMissingData"] == "notBreaching", description


def test_failed_executions_and_dead_letters_alarm_on_the_first_one(template: Template) -> None:
    failed = _alarm(template, "Document pipeline executions failed")
    assert (failed["Namespace"], failed["MetricName"], failed["Statistic"]) == ("AWS/States", "ExecutionsFailed", "Sum")
    assert failed["Dimensions"][0]["Name"] == "StateMachineArn"
    machines = template.find_resources("AWS::StepFunctions::StateMachine")
    pipeline = next(k for k in machines if k.startswith("PipelineStateMachine"))  # not the training loop
    assert failed["Dimensions"][0]["Value"] == {"Ref": pipeline}
    assert failed["Threshold"] == c.FAILED_EXECUTIONS_THRESHOLD == 1
    assert failed["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"

    dlq = _alarm(template, "Uploads EventBridge could not hand")
    assert (dlq["Namespace"], dlq["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert dlq["Threshold"] == 1 and dlq["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    queue = dlq["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
    assert queue.startswith("TriggerDeadLetters")


@pytest.mark.parametrize(
    ("starts", "metric", "threshold"),
    [
        ("Document pipeline executions timed out", "ExecutionsTimedOut", c.TIMED_OUT_EXECUTIONS_THRESHOLD),
        ("Document pipeline executions were aborted", "ExecutionsAborted", c.ABORTED_EXECUTIONS_THRESHOLD),
    ],
)
def test_timed_out_and_aborted_executions_alarm_on_the_first_one(
    template: Template, topic: str, starts: str, metric: str, threshold: float
) -> None:
    # Neither runs the Catch, so the FailedExecutions alarm and the FAILED rate never see these documents.
    alarm = _alarm(template, starts)
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("AWS/States", metric, "Sum")
    machines = template.find_resources("AWS::StepFunctions::StateMachine")
    pipeline = next(k for k in machines if k.startswith("PipelineStateMachine"))  # not the training loop
    assert alarm["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": pipeline}}]
    assert alarm["Threshold"] == threshold == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["EvaluationPeriods"] == 1 and alarm["Period"] == c.ALARM_PERIOD_MINUTES * 60
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic}]
    assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize(
    ("starts", "status", "threshold"),
    [
        ("More than 5% of processed documents ended FAILED", "FAILED", c.ERROR_RATE_THRESHOLD),
        ("More than 30% of processed documents went to NEEDS_REVIEW", "NEEDS_REVIEW", c.REVIEW_RATE_THRESHOLD),
    ],
)
def test_rate_alarms_divide_one_status_by_all_processed(
    template: Template, starts: str, status: str, threshold: float
) -> None:
    alarm = _alarm(template, starts)
    assert alarm["Threshold"] == threshold and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["EvaluationPeriods"] == c.RATE_EVALUATION_PERIODS
    queries = {q["Id"]: q for q in alarm["Metrics"]}
    expression = next(q for q in queries.values() if "Expression" in q)
    assert expression["ReturnData"] is True
    # One DocumentsProcessed per terminal status, each with exactly the dimensions the functions emit
    inputs = {q["Id"]: q["MetricStat"] for q in queries.values() if "MetricStat" in q}
    by_status = {}
    for query_id, stat in inputs.items():
        metric = stat["Metric"]
        assert (metric["Namespace"], metric["MetricName"], stat["Stat"]) == ("Docflow", "DocumentsProcessed", "Sum")
        dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        assert set(dims) == {"service", "status"} and dims["service"] == "docflow"
        by_status[dims["status"]] = query_id
    assert set(by_status) == set(c.TERMINAL_STATUSES)
    text = expression["Expression"]
    total = "SUM([" + ", ".join(by_status[s] for s in c.TERMINAL_STATUSES) + "])"
    assert text == f"IF({total} >= {c.RATE_MIN_DOCUMENTS}, FILL({by_status[status]}, 0) / {total}, 0)"


@pytest.mark.parametrize("signal", c.DRIFT_SIGNALS)
def test_drift_alarm_per_signal_above_the_psi_threshold(template: Template, signal: str) -> None:
    alarm = _alarm(template, f"Predictions drifted from the model's held-out baseline: PSI of {signal} ")
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("Docflow", "DriftScore", "Maximum")
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "docflow"}, {"Name": "signal", "Value": signal}]
    assert alarm["Threshold"] == c.DRIFT_PSI_THRESHOLD == 0.2
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Period"] == c.DRIFT_SCHEDULE_MINUTES * 60


def test_drift_schedule_invokes_the_drift_function(template: Template) -> None:
    drift = _ref(template, "AWS::Lambda::Function", {"Handler": "docflow.handlers.drift.handler"})
    rules = template.find_resources("AWS::Events::Rule", {"Properties": {"ScheduleExpression": "rate(1 hour)"}})
    assert len(rules) == 1
    rule_id, rule = next(iter(rules.items()))
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [drift, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2
    # EventBridge may invoke it (the function's resource policy names this rule)
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Fn::GetAtt": [drift, "Arn"]},
            "Principal": "events.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]},
        },
    )


def test_drift_job_judges_by_the_alarms_threshold(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "docflow.handlers.drift.handler",
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "DOCFLOW_DRIFT_THRESHOLD": str(c.DRIFT_PSI_THRESHOLD),
                        "DOCFLOW_DRIFT_WINDOW_HOURS": str(c.DRIFT_WINDOW_HOURS),
                        "DOCFLOW_MODEL_BUCKET": Match.any_value(),
                        "DOCFLOW_TABLE_NAME": Match.any_value(),
                    }
                )
            },
        },
    )
    # Only the drift job gets them (the functions share one environment mapping in the construct)
    with_threshold = [
        f["Properties"]["Handler"]
        for f in template.find_resources("AWS::Lambda::Function").values()
        if "DOCFLOW_DRIFT_THRESHOLD" in f["Properties"].get("Environment", {}).get("Variables", {})
    ]
    assert with_threshold == ["docflow.handlers.drift.handler"]


def test_drift_function_reads_records_and_models_only(template: Template) -> None:
    drift = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "docflow.handlers.drift.handler"}}
    )
    role = next(iter(drift.values()))["Properties"]["Role"]["Fn::GetAtt"][0]
    actions: set[str] = set()
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                actions.update(listed)
    assert {"dynamodb:Query", "s3:GetObject*"} <= actions
    writes = {
        a
        for a in actions
        if a.startswith(("dynamodb:Put", "dynamodb:Update", "dynamodb:Delete", "s3:Put", "s3:Delete"))
    }
    assert writes == set()


def test_dashboard_shows_every_signal_with_its_emitted_dimensions(dashboard: dict[str, Any]) -> None:
    rows = [row for w in dashboard["widgets"] if "metrics" in w["properties"] for row in _metric_rows(w["properties"])]
    expressions = " ".join(
        row[0]["expression"]
        for w in dashboard["widgets"]
        if "metrics" in w["properties"]
        for row in w["properties"]["metrics"]
        if isinstance(row[0], dict) and "expression" in row[0]
    )
    shown = {row[1] for row in rows if row[0] == "Docflow"} | {
        name for name in EMF_METRICS if f'MetricName="{name}"' in expressions
    }
    assert set(EMF_METRICS) <= shown
    for row in rows:
        if row[0] == "Docflow":
            dims = dict(zip(row[2:-1:2], row[3:-1:2], strict=True))
            assert dims.get("service") == "docflow", row
    # Open-ended dimension values (class, model version) through SEARCH on the exact dimension set
    assert 'SEARCH(\'{Docflow,document_class,model_version,service} MetricName="Predictions"' in expressions
    assert 'SEARCH(\'{Docflow,model_version,service} MetricName="PredictionConfidence"' in expressions


def test_dashboard_latency_percentiles_per_step_and_pipeline(dashboard: dict[str, Any]) -> None:
    steps = _metric_rows(_widget(dashboard, "Step latency"))
    got = {(row[row.index("step") + 1], row[-1]["stat"]) for row in steps}
    assert got == {(step, stat) for step in (t.step for t in flow.tasks()) for stat in ("p50", "p95")}
    pipeline = _metric_rows(_widget(dashboard, "Pipeline latency"))
    got = {(row[row.index("status") + 1], row[-1]["stat"]) for row in pipeline}
    assert got == {(status, stat) for status in c.TERMINAL_STATUSES for stat in ("p50", "p95")}


def test_dashboard_aws_service_widgets(dashboard: dict[str, Any]) -> None:
    executions = {row[1] for row in _metric_rows(_widget(dashboard, "Step Functions executions"))}
    assert {
        "ExecutionsStarted",
        "ExecutionsSucceeded",
        "ExecutionsFailed",
        "ExecutionsTimedOut",
        "ExecutionsAborted",
    } <= executions
    dlq = _metric_rows(_widget(dashboard, "Dead-letter queue depth"))
    assert [row[:2] for row in dlq] == [["AWS/SQS", "ApproximateNumberOfMessagesVisible"]]
    for title, metric in (
        ("Lambda errors", "Errors"),
        ("Lambda throttles", "Throttles"),
        ("Lambda duration", "Duration"),
    ):
        rows = _metric_rows(_widget(dashboard, title))
        labels = {row[-1]["label"] for row in rows}
        assert {row[1] for row in rows} == {metric}
        assert {*c.FUNCTIONS, "Api", *c.TRAINING_FUNCTIONS} <= labels, title
    drift = _widget(dashboard, "Drift")
    assert {row[row.index("signal") + 1] for row in _metric_rows(drift)} == set(c.DRIFT_SIGNALS)
    assert drift["annotations"]["horizontal"][0]["value"] == c.DRIFT_PSI_THRESHOLD
    alarms = [w for w in dashboard["widgets"] if w["type"] == "alarm"]
    assert len(alarms) == 1 and len(alarms[0]["properties"]["alarms"]) >= 8


def test_pipeline_and_functions_are_traced(template: Template) -> None:
    template.has_resource_properties("AWS::StepFunctions::StateMachine", {"TracingConfiguration": {"Enabled": True}})
    functions = template.find_resources("AWS::Lambda::Function")
    ours = {k: f for k, f in functions.items() if f["Properties"].get("Handler", "").startswith("docflow.")}
    assert ours and all(f["Properties"]["TracingConfig"] == {"Mode": "Active"} for f in ours.values())
