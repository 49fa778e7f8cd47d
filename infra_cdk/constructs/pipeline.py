"""The document pipeline state machine, built from docflow.pipeline.flow (the shape the embedded runner walks
too: Validate → Choice → ExtractText, or a Map over page ranges → Classify), with the project's one retry/catch
policy on every task."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from docflow.pipeline import flow, policy
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


def condition(choice: flow.Choice) -> sfn.Condition:
    """A flow Choice's check, in Step Functions' terms (the embedded runner's are docflow.pipeline.runner.holds)."""
    path = f"$.{choice.field}"
    if choice.check is flow.Check.IS_TRUE:
        return sfn.Condition.boolean_equals(path, True)
    if choice.check is flow.Check.HAS_FIRST_ITEM:
        return sfn.Condition.is_present(f"{path}[0]")
    raise ValueError(f"unknown check {choice.check}")


class DocumentPipeline(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, functions: PipelineFunctions, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)

        # Validate and RecordFailure (flow.py's owner_input) get the execution's id with their input: the owner
        # of the document's work, so that a retried attempt knows the record its own earlier attempt wrote
        # (docflow.handlers._step).
        owned_input = sfn.TaskInput.from_object(
            {"event": sfn.JsonPath.entire_payload, "owner": sfn.JsonPath.execution_id}
        )

        def task(spec: flow.Task) -> tasks.LambdaInvoke:
            return tasks.LambdaInvoke(
                self,
                spec.state,
                lambda_function=functions[spec.step],
                output_path="$.Payload",
                # Our retry rules name the Lambda service errors; don't stack CDK's default on top.
                retry_on_service_exceptions=False,
                payload=owned_input if spec.owner_input else None,
            )

        # Each of flow.py's states built once, by name; a state's targets (next, choices, catch) are built first,
        # as it needs them to name (the flow has no loops).
        built: dict[str, sfn.IChainable] = {}

        def state(name: str) -> sfn.IChainable:
            if name not in built:
                built[name] = build(flow.BY_NAME[name])
            return built[name]

        def build(spec: flow.State) -> sfn.IChainable:
            catch_target = state(spec.catch) if isinstance(spec, flow.Task | flow.Map) and spec.catch else None
            if isinstance(spec, flow.Task):
                lambda_task = apply_policy(task(spec), catch_target)
                return lambda_task.next(state(spec.next)) if spec.next else lambda_task
            if isinstance(spec, flow.Choice):
                return (
                    sfn.Choice(self, spec.state)
                    .when(condition(spec), state(spec.then))
                    .otherwise(state(spec.otherwise))
                )
            if isinstance(spec, flow.Map):
                map_state = sfn.Map(
                    self,
                    spec.state,
                    items_path=f"$.{spec.items}",
                    item_selector={
                        "state.$": "$",
                        **{f"{field}.$": f"$$.Map.Item.Value.{field}" for field in spec.item_fields},
                    },
                    max_concurrency=c.MAP_MAX_CONCURRENCY,
                    result_path=f"$.{spec.result}",
                )
                map_state.item_processor(apply_policy(task(spec.task), None))
                if catch_target is not None:
                    map_state.add_catch(
                        catch_target, errors=list(policy.CATCH_ERRORS), result_path=policy.ERROR_RESULT_PATH
                    )
                return map_state.next(state(spec.next))
            if isinstance(spec, flow.Succeed):
                return sfn.Succeed(self, spec.state)
            return sfn.Fail(self, spec.state, cause=spec.cause)

        definition = state(flow.START)

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
