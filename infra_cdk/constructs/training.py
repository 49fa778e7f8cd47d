"""The training loop on AWS: a state machine PrepareData (Lambda) → SageMaker createTrainingJob.sync →
EvaluateAndGate (Lambda) → Promoted? → Publish (Lambda) → RescoreQueue (Lambda, looped until the review queue is
done), started daily by an EventBridge schedule and by the API's "Labels threshold reached" event
(docflow/retrain.py). The steps are docflow_training.loop, and docflow.pipeline.rescore after Publish."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import tempfile
from pathlib import Path

from aws_cdk import ArnFormat, Aws, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from docflow.pipeline import policy
from docflow.retrain import EVENT_DETAIL_TYPE, EVENT_SOURCE
from docflow_training.families import FAMILIES
from docflow_training.launch import SM_ENTRY_SCRIPT, SageMakerJobConfig, stage_source_dir
from infra_cdk import constants as c
from infra_cdk.constructs.functions import PipelineFunctions
from infra_cdk.constructs.pipeline import apply_policy
from infra_cdk.constructs.storage import Storage

CODE_TARBALL = c.REPO / "layers" / "build" / "training-code" / "sourcedir.tar.gz"


def build_code_tarball(dst: Path = CODE_TARBALL) -> Path:
    """The job's code as the framework container expects it (sagemaker_submit_directory: a tar.gz of the
    docflow packages, requirements.txt and the entry script), byte-for-byte the same for the same sources
    so the asset's hash changes only when the code does."""
    with tempfile.TemporaryDirectory(prefix="docflow-training-code-") as tmp:
        source = stage_source_dir(Path(tmp) / "code")
        raw = io.BytesIO()
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            for path in sorted(source.rglob("*")):
                info = tar.gettarinfo(str(path), arcname=path.relative_to(source).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o755 if path.is_dir() else 0o644
                if path.is_file():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    data = raw.getvalue()
    if not dst.is_file() or hashlib.sha256(dst.read_bytes()).digest() != hashlib.sha256(data).digest():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    return dst


class TrainingLoop(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        functions: PipelineFunctions,
        label_sources: list[lambda_.Function],
        removal_policy: RemovalPolicy,
        schedule: str = c.TRAINING_SCHEDULE,
        label_threshold: int = c.RETRAIN_LABEL_THRESHOLD,
        instance_type: str | None = None,
        mlflow_tracking_arn: str | None = None,
        family: str | None = None,
    ) -> None:
        """label_sources: the functions that store users' labels (the API): they count them and send the
        event. mlflow_tracking_arn: a SageMaker managed MLflow server the job logs its run to (optional).
        family: the model family the job fits (docflow_training.families; default linear)."""
        super().__init__(scope, construct_id)
        job_defaults = SageMakerJobConfig()
        self.instance_type = instance_type or job_defaults.instance_type
        self.family = family or "linear"
        if self.family not in FAMILIES:
            raise ValueError(f"training family {self.family!r}: choose one of {', '.join(FAMILIES)}")
        models, table, docs = storage.models, storage.table, storage.documents

        # -- the functions ---------------------------------------------------------------------------
        self.functions = {
            name: functions.build_function(self, name, spec, removal_policy)
            for name, spec in c.TRAINING_FUNCTIONS.items()
        }
        loop_env = {
            "DOCFLOW_TRAINING_CORPUS_PREFIX": c.TRAINING_CORPUS_PREFIX,
            "DOCFLOW_TRAINING_VALIDATION_PREFIX": c.TRAINING_VALIDATION_PREFIX,
            "DOCFLOW_TRAINING_JOBS_PREFIX": c.TRAINING_JOBS_PREFIX,
            "DOCFLOW_TRAINING_MODELS_PREFIX": c.MODELS_PREFIX,
        }
        for fn in self.functions.values():
            for name, value in loop_env.items():
                fn.add_environment(name, value)
        prepare, gate, publish, rescore = (
            self.functions[n] for n in ("PrepareTrainingData", "EvaluateAndGate", "PublishModel", "RescoreQueue")
        )
        # PrepareData: the users' labels (records + extracted text), the corpus listing, the job's channels.
        table.grant_read_data(prepare)
        docs.grant_read(prepare, f"{c.TEXT_PREFIX}*")
        models.grant_read(prepare, f"{c.TRAINING_PREFIX}*")
        models.grant_put(prepare, f"{c.TRAINING_JOBS_PREFIX}*")
        # EvaluateAndGate: the job's artifacts, the champion; writes the decision beside the version.
        models.grant_read(gate, f"{c.TRAINING_JOBS_PREFIX}*")
        models.grant_read(gate, f"{c.MODELS_PREFIX}*")
        models.grant_put(gate, f"{c.MODELS_PREFIX}*")
        # Publish: the job's artifacts; writes the version's files, then champion.json.
        models.grant_read(publish, f"{c.TRAINING_JOBS_PREFIX}*")
        models.grant_put(publish, f"{c.MODELS_PREFIX}*")
        # RescoreQueue: as Classify, from the stored text: the queued records (and their history), the result
        # files; the champion the pointer names.
        table.grant_read_write_data(rescore)
        docs.grant_read(rescore, f"{c.TEXT_PREFIX}*")
        docs.grant_put(rescore, f"{c.RESULTS_PREFIX}*")
        models.grant_read(rescore, f"{c.MODELS_PREFIX}*")

        # -- the training job ------------------------------------------------------------------------
        self.code = s3_assets.Asset(self, "TrainingCode", path=str(build_code_tarball()))
        self.job_role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="docflow training job: reads its channels and code, writes its output, logs",
        )
        # Its grants are all here: the SageMaker task would add s3:GetObject on "*" for channels whose URIs
        # come from the state (see without_policy_updates below). It reads its channels (the corpus, the
        # validation set, the job's feedback), writes its output, and reads one object of the assets bucket:
        # its code.
        models.grant_read(self.job_role, f"{c.TRAINING_PREFIX}*")
        models.grant_put(self.job_role, f"{c.TRAINING_JOBS_PREFIX}*")
        self.job_role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[f"arn:{Aws.PARTITION}:s3:::{self.code.s3_bucket_name}/{self.code.s3_object_key}"],
            )
        )
        stack = Stack.of(self)
        self.job_role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="/aws/sagemaker/TrainingJobs:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        environment = {
            "MLFLOW_EXPERIMENT_NAME": job_defaults.experiment,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        if mlflow_tracking_arn:
            environment["MLFLOW_TRACKING_URI"] = mlflow_tracking_arn
            self.job_role.add_to_policy(
                iam.PolicyStatement(actions=["sagemaker-mlflow:*"], resources=[mlflow_tracking_arn])
            )
        device = "gpu" if self.instance_type.startswith(("ml.g", "ml.p")) else "cpu"
        image = (
            f"{c.TRAINING_IMAGE_ACCOUNT}.dkr.ecr.{Aws.REGION}.{Aws.URL_SUFFIX}/"
            f"{c.TRAINING_IMAGE_REPOSITORY}:{c.TRAINING_IMAGE_TAG.format(device=device)}"
        )

        def channel(name: str) -> tasks.Channel:
            return tasks.Channel(
                channel_name=name,
                data_source=tasks.DataSource(
                    s3_data_source=tasks.S3DataSource(
                        s3_location=tasks.S3Location.from_json_expression(f"$.prepared.channels.{name}"),
                        s3_data_type=tasks.S3DataType.S3_PREFIX,
                        s3_data_distribution_type=tasks.S3DataDistributionType.FULLY_REPLICATED,
                    )
                ),
            )

        train = tasks.SageMakerCreateTrainingJob(
            self,
            "Train model",
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,  # createTrainingJob.sync: waits for the job
            training_job_name=sfn.JsonPath.string_at("$.prepared.job_name"),
            role=self.job_role.without_policy_updates(),
            algorithm_specification=tasks.AlgorithmSpecification(
                training_image=tasks.DockerImage.from_registry(image), training_input_mode=tasks.InputMode.FILE
            ),
            input_data_config=[channel(name) for name in ("train", "validation", "feedback")],
            output_data_config=tasks.OutputDataConfig(
                s3_output_location=tasks.S3Location.from_json_expression("$.prepared.output_path")
            ),
            resource_config=tasks.ResourceConfig(
                instance_count=1,  # one linear model: nothing to distribute
                instance_type=ec2.InstanceType(self.instance_type.removeprefix("ml.")),
                volume_size=Size.gibibytes(job_defaults.volume_gb),
            ),
            stopping_condition=tasks.StoppingCondition(max_runtime=Duration.seconds(job_defaults.max_run_seconds)),
            hyperparameters={
                # The framework container's toolkit runs sagemaker_program from sagemaker_submit_directory.
                "sagemaker_program": SM_ENTRY_SCRIPT,
                "sagemaker_submit_directory": self.code.s3_object_url,
                "sagemaker_region": Aws.REGION,
                # The job trains and reports; the gate and publishing are the next states.
                "register_version": "false",
                "family": self.family,
                "corpus_uri": sfn.JsonPath.string_at("$.prepared.channels.train"),
                "run_name": sfn.JsonPath.string_at("$.prepared.job_name"),
            },
            environment=environment,
            result_path="$.training",
            result_selector={
                "job_name.$": "$.TrainingJobName",
                "model_artifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
                "status.$": "$.TrainingJobStatus",
            },
        )

        # -- the state machine -----------------------------------------------------------------------
        # The caught error's cause (a Lambda's errorType and message, or the failed job's DescribeTrainingJob
        # with its FailureReason) becomes the execution's; the error name is fixed, so an alarm can match it.
        failed = sfn.Fail(self, "Training loop failed", error="TrainingLoopFailed", cause_path="$.error.Cause")

        def invoke(state_name: str, fn: lambda_.IFunction, **kwargs: object) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self,
                state_name,
                lambda_function=fn,
                retry_on_service_exceptions=False,
                **kwargs,  # type: ignore[arg-type]
            )
            return apply_policy(task, failed)

        prepare_task = invoke(
            "Prepare data",
            prepare,
            payload=sfn.TaskInput.from_object(
                {
                    "request": sfn.JsonPath.entire_payload,
                    "execution_name": sfn.JsonPath.string_at("$$.Execution.Name"),
                    "started_at": sfn.JsonPath.string_at("$$.Execution.StartTime"),
                }
            ),
            output_path="$.Payload",
        )
        train.add_catch(failed, errors=list(policy.CATCH_ERRORS), result_path=policy.ERROR_RESULT_PATH)
        gate_task = invoke("Evaluate and gate", gate, result_selector={"outcome.$": "$.Payload"}, result_path="$.gate")
        publish_task = invoke(
            "Publish model", publish, result_selector={"published.$": "$.Payload"}, result_path="$.publish"
        )
        refused = sfn.Succeed(self, "Refused by the gate", comment="the champion stays; v{N}/decision.json says why")
        published = sfn.Succeed(self, "Published")
        # The new champion scores the review queue again, one time-boxed invocation after another (each returns
        # the cursor the next goes on from), at most RESCORE_MAX_INVOCATIONS times. The model is published by
        # now: a rescore that fails after the policy's retries is recorded in $.rescore_error, and the run
        # still succeeds (what it did not reach stays queued with the old model's suggestion).
        rescore_task = apply_policy(
            tasks.LambdaInvoke(
                self,
                "Rescore review queue",
                lambda_function=rescore,
                retry_on_service_exceptions=False,
                payload_response_only=True,  # $.rescore is the handler's report, cursor included
                result_path="$.rescore",
            ),
            None,
        )
        rescore_task.add_catch(
            sfn.Pass(self, "Rescore failed", comment="the champion is published; $.rescore_error says why").next(
                published
            ),
            errors=list(policy.CATCH_ERRORS),
            result_path="$.rescore_error",
        )
        queue_rescored = (
            sfn.Choice(self, "Queue rescored?")
            .when(sfn.Condition.boolean_equals("$.rescore.done", True), published)
            .when(sfn.Condition.number_less_than("$.rescore.invocations", c.RESCORE_MAX_INVOCATIONS), rescore_task)
            .otherwise(
                sfn.Pass(
                    self,
                    "Rescore stopped",
                    comment="the invocations ran out; the rest of the queue keeps the old model's suggestion",
                ).next(published)
            )
        )
        promoted = (
            sfn.Choice(self, "Promoted?")
            .when(
                sfn.Condition.boolean_equals("$.decision.promoted", True),
                publish_task.next(rescore_task).next(queue_rescored),
            )
            .otherwise(refused)
        )
        decision = sfn.Pass(
            self,
            "Decision",
            parameters={"prepared.$": "$.prepared", "training.$": "$.training", "decision.$": "$.gate.outcome"},
        )
        definition = prepare_task.next(train).next(gate_task).next(decision).next(promoted)

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
            timeout=Duration.hours(c.TRAINING_TIMEOUT_HOURS),
            comment="Docflow training loop: prepare data, train on SageMaker, gate against the champion, publish",
        )

        # -- what starts it --------------------------------------------------------------------------
        self.dlq = sqs.Queue(
            self,
            "DeadLetters",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )

        def start(trigger: str) -> targets.SfnStateMachine:
            return targets.SfnStateMachine(
                self.state_machine,
                input=events.RuleTargetInput.from_object(
                    {"trigger": trigger, "event_id": events.EventField.event_id, "time": events.EventField.time}
                ),
                dead_letter_queue=self.dlq,
                retry_attempts=20,
                max_event_age=Duration.hours(24),
            )

        self.schedule_rule = events.Rule(
            self,
            "Schedule",
            description="Retrain the classifier on the corpus and the users' labels",
            schedule=events.Schedule.expression(schedule),
        )
        self.schedule_rule.add_target(start("schedule"))
        self.labels_rule = events.Rule(
            self,
            "OnNewLabels",
            description=f"Retrain when users have sent {label_threshold} more labels (docflow/retrain.py)",
            event_pattern=events.EventPattern(source=[EVENT_SOURCE], detail_type=[EVENT_DETAIL_TYPE]),
        )
        self.labels_rule.add_target(start("labels"))
        bus = events.EventBus.from_event_bus_name(self, "DefaultBus", "default")
        for fn in label_sources:
            fn.add_environment("DOCFLOW_RETRAIN_LABEL_THRESHOLD", str(label_threshold))
            fn.add_environment("DOCFLOW_EVENT_BUS_NAME", "default")
            bus.grant_put_events_to(fn)
