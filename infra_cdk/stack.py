"""The Docflow stack: composes one construct per concern."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.constructs.api import RestApi
from infra_cdk.constructs.functions import PipelineFunctions
from infra_cdk.constructs.monitoring import Monitoring
from infra_cdk.constructs.pipeline import DocumentPipeline
from infra_cdk.constructs.storage import Storage
from infra_cdk.constructs.training import TrainingLoop
from infra_cdk.constructs.trigger import UploadTrigger
from infra_cdk.nag import acknowledge


class DocflowStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, stage: str = "dev", **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # Production keeps data when the stack goes; throwaway stages (local, dev) clean up.
        removal = RemovalPolicy.RETAIN if stage == "prod" else RemovalPolicy.DESTROY

        self.storage = Storage(self, "Storage", removal_policy=removal)
        self.functions = PipelineFunctions(
            self, "Functions", storage=self.storage, removal_policy=removal, host_mode=stage == "local"
        )
        self.pipeline = DocumentPipeline(self, "Pipeline", functions=self.functions, removal_policy=removal)
        self.api = RestApi(self, "Api", storage=self.storage, functions=self.functions, removal_policy=removal)
        self.trigger = UploadTrigger(
            self, "Trigger", bucket=self.storage.documents, state_machine=self.pipeline.state_machine
        )
        self.training = TrainingLoop(
            self,
            "Training",
            storage=self.storage,
            functions=self.functions,
            label_sources=[self.api.function],
            removal_policy=removal,
            instance_type=self.node.try_get_context("trainingInstanceType"),
            mlflow_tracking_arn=self.node.try_get_context("mlflowTrackingArn"),
            family=self.node.try_get_context("trainingFamily"),
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            functions={**self.functions.functions, "Api": self.api.function, **self.training.functions},
            drift_function=self.functions["Drift"],
            state_machine=self.pipeline.state_machine,
            dead_letter_queue=self.trigger.dlq,
            removal_policy=removal,
            alarm_email=self.node.try_get_context(c.ALARM_EMAIL_CONTEXT),
        )

        outputs = {
            "DocumentsBucket": self.storage.documents.bucket_name,
            "ModelBucket": self.storage.models.bucket_name,
            "TableName": self.storage.table.table_name,
            "PipelineStateMachineArn": self.pipeline.state_machine.state_machine_arn,
            "DeadLetterQueueUrl": self.trigger.dlq.queue_url,
            "ApiUrl": self.api.api.url,
            "ApiId": self.api.api.rest_api_id,
            "ApiKeyId": self.api.key.key_id,
            "TrainingStateMachineArn": self.training.state_machine.state_machine_arn,
            "TrainingJobRoleArn": self.training.job_role.role_arn,
            "AlarmTopicArn": self.monitoring.topic.topic_arn,
            "DashboardName": self.monitoring.dashboard.dashboard_name,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
        docs = self.storage.documents
        acknowledge(
            self,
            object_patterns=[
                (docs, f"{c.INCOMING_PREFIX}*"),
                (docs, f"{c.TEXT_PREFIX}*"),
                (docs, f"{c.RESULTS_PREFIX}*"),
                (self.storage.models, "*"),
                # The training loop's prefixes
                *((self.storage.models, f"{p}*") for p in (c.TRAINING_PREFIX, c.TRAINING_JOBS_PREFIX, c.MODELS_PREFIX)),
            ],
            invoked_functions=[
                *self.functions.functions.values(),
                self.api.function,
                *self.training.functions.values(),
            ],
            tables=[self.storage.table],
        )
