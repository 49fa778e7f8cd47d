"""The document pipeline state machine: Validate → Choice → ExtractText (or a Map over page ranges) →
Classify, with the project's one retry/catch policy on every task."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from docflow.pipeline import policy
from infra_cdk import constants as c
from infra_cdk.constructs.functions import PipelineFunctions


def apply_policy(task: tasks.LambdaInvoke, catch_target: sfn.IChainable | None) -> tasks.LambdaInvoke:
    """Retry and Catch exactly as docflow.pipeline.policy says (the embedded runner reads the same)."""
    for rule in policy.RETRY_RULES:
        task.add_retry(
            errors=list(rule.errors),
            interval=Duration.seconds(rule.interval_seconds),
            max_attempts=rule.max_attempts,
            backoff_rate=rule.backoff_rate,
            max_delay=Duration.seconds(rule.max_delay_seconds),
            jitter_strategy=sfn.JitterType.FULL if rule.jitter else sfn.JitterType.NONE,
        )
    if catch_target is not None:
        task.add_catch(catch_target, errors=list(policy.CATCH_ERRORS), result_path=policy.ERROR_RESULT_PATH)
    return task


class DocumentPipeline(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, functions: PipelineFunctions, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)

        def invoke(state_name: str, fn: lambda_.IFunction, **kwargs: object) -> tasks.LambdaInvoke:
            return tasks.LambdaInvoke(
                self,
                state_name,
                lambda_function=fn,
                output_path="$.Payload",
                # Our retry rules name the Lambda service errors; don't stack CDK's default on top.
                retry_on_service_exceptions=False,
                **kwargs,  # type: ignore[arg-type]
            )

        # Validate and RecordFailure get the execution's id with their input: the owner of the document's work,
        # so that a retried attempt knows the record its own earlier attempt wrote (docflow.handlers._step).
        owned_input = sfn.TaskInput.from_object(
            {"event": sfn.JsonPath.entire_payload, "owner": sfn.JsonPath.execution_id}
        )
        record_failure = apply_policy(invoke("Record failure", functions["RecordFailure"], payload=owned_input), None)
        failed = sfn.Fail(self, "Document failed", cause="A step failed; the record holds the error and cause")
        on_error = record_failure.next(failed)

        validate = apply_policy(invoke("Validate document", functions["Validate"], payload=owned_input), on_error)
        record_outcome = apply_policy(invoke("Record rejection or duplicate", functions["RecordOutcome"]), on_error)
        extract = apply_policy(invoke("Extract text", functions["ExtractText"]), on_error)
        extract_pages = apply_policy(invoke("Extract page range", functions["ExtractPages"]), None)
        merge = apply_policy(invoke("Merge page ranges", functions["MergeText"]), on_error)
        classify = apply_policy(invoke("Classify document", functions["Classify"]), on_error)
        done = sfn.Succeed(self, "Done")

        page_map = sfn.Map(
            self,
            "Extract page ranges",
            items_path="$.page_ranges",
            item_selector={
                "state.$": "$",
                "first_page.$": "$$.Map.Item.Value.first_page",
                "last_page.$": "$$.Map.Item.Value.last_page",
            },
            max_concurrency=c.MAP_MAX_CONCURRENCY,
            result_path="$.parts",
        )
        page_map.item_processor(extract_pages)
        page_map.add_catch(on_error, errors=list(policy.CATCH_ERRORS), result_path=policy.ERROR_RESULT_PATH)

        classify.next(done)
        extract.next(classify)
        page_map.next(merge)
        merge.next(classify)
        route_extraction = (
            sfn.Choice(self, "Long PDF?")
            .when(sfn.Condition.is_present("$.page_ranges[0]"), page_map)
            .otherwise(extract)
        )
        accepted = (
            sfn.Choice(self, "Accepted?")
            .when(sfn.Condition.boolean_equals("$.proceed", True), route_extraction)
            .otherwise(record_outcome.next(done))
        )
        definition = validate.next(accepted)

        log_group = logs.LogGroup(
            self, "ExecutionLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=removal_policy
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            timeout=Duration.hours(2),
            comment="Docflow: every upload ends CLASSIFIED, NEEDS_REVIEW, REJECTED, DUPLICATE or FAILED",
        )
