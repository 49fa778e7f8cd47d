"""Monitoring: the CloudWatch dashboard, the alarms (to one SNS topic) and the drift job's schedule.

Custom metrics are the ones the functions publish in CloudWatch embedded metric format (namespace Docflow,
see docflow/telemetry.py). CloudWatch matches a metric by its exact dimension set, so every metric here
names the same dimensions the functions emit: service=docflow plus the metric's own (status, step, signal).
Metrics whose dimension values are open-ended (document_class, model_version) are graphed with SEARCH.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from docflow.pipeline import flow
from infra_cdk import constants as c

PERIOD = Duration.minutes(c.ALARM_PERIOD_MINUTES)
DRIFT_PERIOD = Duration.minutes(c.DRIFT_SCHEDULE_MINUTES)
STATUS_IDS = {
    "CLASSIFIED": "classified",
    "NEEDS_REVIEW": "review",
    "REJECTED": "rejected",
    "DUPLICATE": "duplicate",
    "FAILED": "failed",
}


def docflow_metric(
    name: str,
    statistic: str = "Sum",
    period: Duration = PERIOD,
    dimensions: Mapping[str, str] | None = None,
    labelled: bool = True,
) -> cw.Metric:
    """A metric as the functions emit it: namespace Docflow, service=docflow plus its own dimensions.
    ``labelled``: a legend label for graphs (an alarm on a labelled metric becomes a metric-math query)."""
    dimensions = dict(dimensions or {})
    return cw.Metric(
        namespace=c.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": c.SERVICE, **dimensions},
        statistic=statistic,
        period=period,
        label=" ".join([name, *dimensions.values()]) if labelled else None,
    )


def processed(status: str) -> cw.Metric:
    return docflow_metric("DocumentsProcessed", dimensions={"status": status})


def share_of_processed(status: str, label: str) -> cw.MathExpression:
    """``status``'s share of the documents that reached a terminal status in a period; 0 for a period with
    fewer than RATE_MIN_DOCUMENTS of them (a rate of 1 of 2 is noise, not an outage). The total is SUM over
    the array of per-status series, which adds what each timestamp has: a status that reported nothing in
    the whole window (no DUPLICATE for days) must not empty the denominator, as it would in a + b."""
    total = "SUM([" + ", ".join(STATUS_IDS.values()) + "])"
    return cw.MathExpression(
        expression=f"IF({total} >= {c.RATE_MIN_DOCUMENTS}, FILL({STATUS_IDS[status]}, 0) / {total}, 0)",
        using_metrics={i: processed(s) for s, i in STATUS_IDS.items()},
        label=label,
        period=PERIOD,
    )


def search(metric: str, dimensions: tuple[str, ...], statistic: str, label: str) -> cw.MathExpression:
    keys = ",".join([c.METRICS_NAMESPACE, *sorted([*dimensions, "service"])])
    seconds = int(PERIOD.to_seconds())
    return cw.MathExpression(
        expression=f"SEARCH('{{{keys}}} MetricName=\"{metric}\" service=\"{c.SERVICE}\"', '{statistic}', {seconds})",
        label=label,
        period=PERIOD,
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        drift_function: lambda_.Function,
        state_machine: sfn.IStateMachine,
        dead_letter_queue: sqs.IQueue,
        removal_policy: RemovalPolicy,
        alarm_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = self._topic(removal_policy, alarm_email)
        self.alarms = self._alarms(state_machine, dead_letter_queue)
        for alarm in self.alarms.values():
            alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
            alarm.add_ok_action(cw_actions.SnsAction(self.topic))
        # The job's verdict and the alarm use the same threshold.
        drift_function.add_environment("DOCFLOW_DRIFT_THRESHOLD", str(c.DRIFT_PSI_THRESHOLD))
        drift_function.add_environment("DOCFLOW_DRIFT_WINDOW_HOURS", str(c.DRIFT_WINDOW_HOURS))
        self.drift_schedule = events.Rule(
            self,
            "DriftSchedule",
            description="Compare the last hours of predictions with the champion's baseline (DriftScore)",
            schedule=events.Schedule.rate(DRIFT_PERIOD),
            targets=[targets.LambdaFunction(drift_function, retry_attempts=2, max_event_age=DRIFT_PERIOD)],
        )
        self.dashboard = self._dashboard(functions, state_machine, dead_letter_queue)

    def _topic(self, removal_policy: RemovalPolicy, alarm_email: str | None) -> sns.Topic:
        # A key of our own: CloudWatch cannot publish to a topic under the AWS-managed SNS key.
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description="docflow alarm topic encryption",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        topic = sns.Topic(self, "AlarmTopic", display_name="Docflow alarms", master_key=key, enforce_ssl=True)
        # The topic policy replaces SNS's default one: CloudWatch, this account's alarms only, may publish.
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisAccountsAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:*"
                    },
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )
        if alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        return topic

    def _alarms(self, state_machine: sfn.IStateMachine, dlq: sqs.IQueue) -> dict[str, cw.Alarm]:
        not_breaching = cw.TreatMissingData.NOT_BREACHING
        at_least = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        above = cw.ComparisonOperator.GREATER_THAN_THRESHOLD

        def any_in_period(name: str, description: str, metric: cw.IMetric, threshold: float) -> cw.Alarm:
            """An alarm on a count: at least `threshold` in one period; no data is no problem."""
            return cw.Alarm(
                self,
                f"{name}Alarm",
                alarm_description=description,
                metric=metric,
                threshold=threshold,
                comparison_operator=at_least,
                evaluation_periods=1,
                treat_missing_data=not_breaching,
            )

        left_processing = (
            "no Catch runs, so each document stays PROCESSING until a new delivery of it takes it over once "
            "DOCFLOW_PROCESSING_LEASE_SECONDS have passed."
        )
        alarms = {
            "FailedExecutions": any_in_period(
                "FailedExecutions",
                "Document pipeline executions failed (each is a document ending FAILED).",
                state_machine.metric_failed(period=PERIOD, statistic="Sum"),
                c.FAILED_EXECUTIONS_THRESHOLD,
            ),
            "TimedOutExecutions": any_in_period(
                "TimedOutExecutions",
                f"Document pipeline executions timed out: {left_processing}",
                state_machine.metric_timed_out(period=PERIOD, statistic="Sum"),
                c.TIMED_OUT_EXECUTIONS_THRESHOLD,
            ),
            "AbortedExecutions": any_in_period(
                "AbortedExecutions",
                f"Document pipeline executions were aborted (stopped): {left_processing}",
                state_machine.metric_aborted(period=PERIOD, statistic="Sum"),
                c.ABORTED_EXECUTIONS_THRESHOLD,
            ),
            "DeadLetters": any_in_period(
                "DeadLetters",
                "Uploads EventBridge could not hand to the pipeline wait in the dead-letter queue.",
                dlq.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
                c.DLQ_MESSAGES_THRESHOLD,
            ),
            "ErrorRate": cw.Alarm(
                self,
                "ErrorRateAlarm",
                alarm_description=f"More than {c.ERROR_RATE_THRESHOLD:.0%} of processed documents ended FAILED.",
                metric=share_of_processed("FAILED", "FAILED / processed"),
                threshold=c.ERROR_RATE_THRESHOLD,
                comparison_operator=above,
                evaluation_periods=c.RATE_EVALUATION_PERIODS,
                treat_missing_data=not_breaching,
            ),
            "ReviewRate": cw.Alarm(
                self,
                "ReviewRateAlarm",
                alarm_description=(
                    f"More than {c.REVIEW_RATE_THRESHOLD:.0%} of processed documents went to NEEDS_REVIEW."
                ),
                metric=share_of_processed("NEEDS_REVIEW", "NEEDS_REVIEW / processed"),
                threshold=c.REVIEW_RATE_THRESHOLD,
                comparison_operator=above,
                evaluation_periods=c.RATE_EVALUATION_PERIODS,
                treat_missing_data=not_breaching,
            ),
        }
        for signal in c.DRIFT_SIGNALS:
            name = "Drift" + "".join(part.capitalize() for part in signal.split("_"))
            alarms[name] = cw.Alarm(
                self,
                f"{name}Alarm",
                alarm_description=(
                    f"Predictions drifted from the model's held-out baseline: PSI of {signal} above "
                    f"{c.DRIFT_PSI_THRESHOLD} (docflow drift tells which classes or confidence bins moved)."
                ),
                metric=docflow_metric("DriftScore", "Maximum", DRIFT_PERIOD, {"signal": signal}, labelled=False),
                threshold=c.DRIFT_PSI_THRESHOLD,
                comparison_operator=above,
                evaluation_periods=1,
                treat_missing_data=not_breaching,
            )
        return alarms

    def _dashboard(
        self, functions: Mapping[str, lambda_.IFunction], state_machine: sfn.IStateMachine, dlq: sqs.IQueue
    ) -> cw.Dashboard:
        dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.hours(24))

        def graph(title: str, metrics: list[cw.IMetric], width: int = 8, **kwargs: object) -> cw.GraphWidget:
            return cw.GraphWidget(title=title, left=metrics, width=width, height=6, **kwargs)  # type: ignore[arg-type]

        def percentiles(name: str, dimension: str, values: Sequence[str]) -> list[cw.IMetric]:
            return [
                docflow_metric(name, stat, dimensions={dimension: value}).with_(label=f"{value} {stat}")
                for value in values
                for stat in ("p50", "p95")
            ]

        dashboard.add_widgets(
            graph(
                "Throughput (documents)",
                [docflow_metric("DocumentsUploaded"), *(processed(s) for s in STATUS_IDS)],
            ),
            graph("Terminal statuses", [processed(s) for s in STATUS_IDS], stacked=True),
            graph(
                "Failures",
                [
                    processed("FAILED"),
                    state_machine.metric_failed(period=PERIOD, statistic="Sum", label="executions failed"),
                    share_of_processed("FAILED", "FAILED / processed"),
                    share_of_processed("NEEDS_REVIEW", "NEEDS_REVIEW / processed"),
                ],
            ),
        )
        steps = [task.step for task in flow.tasks()]  # every step of the pipeline's flow
        dashboard.add_widgets(
            graph("Step latency p50 / p95 (s)", percentiles("StepSeconds", "step", steps), width=12),
            graph(
                "Pipeline latency p50 / p95 (s), upload to terminal status",
                percentiles("PipelineSeconds", "status", c.TERMINAL_STATUSES),
                width=12,
            ),
        )
        dashboard.add_widgets(
            graph(
                "OCR",
                [
                    docflow_metric("OcrConfidence", "Average"),
                    docflow_metric("OcrConfidence", "p10"),
                ],
                right=[docflow_metric("OcrSecondsPerPage", "p50"), docflow_metric("OcrSecondsPerPage", "p95")],
            ),
            graph(
                "Prediction confidence by model version",
                [
                    search("PredictionConfidence", ("model_version",), "Average", "v${PROP('Dim.model_version')} mean"),
                    search("PredictionConfidence", ("model_version",), "p10", "v${PROP('Dim.model_version')} p10"),
                ],
            ),
            graph(
                "Class mix (predictions by class and model version)",
                [
                    search(
                        "Predictions",
                        ("document_class", "model_version"),
                        "Sum",
                        "${PROP('Dim.document_class')} (v${PROP('Dim.model_version')})",
                    )
                ],
                stacked=True,
            ),
        )
        dashboard.add_widgets(
            graph(
                "Step Functions executions",
                [
                    state_machine.metric_started(period=PERIOD, statistic="Sum", label="started"),
                    state_machine.metric_succeeded(period=PERIOD, statistic="Sum", label="succeeded"),
                    state_machine.metric_failed(period=PERIOD, statistic="Sum", label="failed"),
                    state_machine.metric_timed_out(period=PERIOD, statistic="Sum", label="timed out"),
                    state_machine.metric_aborted(period=PERIOD, statistic="Sum", label="aborted"),
                ],
            ),
            graph(
                "Dead-letter queue depth",
                [dlq.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")],
            ),
            graph(
                "Drift (PSI vs the model's held-out baseline)",
                [docflow_metric("DriftScore", "Maximum", DRIFT_PERIOD, {"signal": s}) for s in c.DRIFT_SIGNALS],
                left_annotations=[cw.HorizontalAnnotation(value=c.DRIFT_PSI_THRESHOLD, label="alarm")],
            ),
        )
        named = sorted(functions.items())
        dashboard.add_widgets(
            graph("Lambda errors", [fn.metric_errors(period=PERIOD, label=name) for name, fn in named]),
            graph("Lambda throttles", [fn.metric_throttles(period=PERIOD, label=name) for name, fn in named]),
            graph(
                "Lambda duration p95 (ms)",
                [fn.metric_duration(period=PERIOD, statistic="p95", label=name) for name, fn in named],
            ),
        )
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24, height=3)
        )
        return dashboard
