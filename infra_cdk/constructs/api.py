"""The REST API: API Gateway (REST, Lambda proxy) → the FastAPI app through Mangum, behind an API key
with a usage plan (throttling and a daily quota)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.constructs.functions import PipelineFunctions
from infra_cdk.constructs.storage import Storage


class RestApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        functions: PipelineFunctions,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = functions.build_function(self, "Handler", c.API_FUNCTION, removal_policy)
        docs, table = storage.documents, storage.table
        docs.grant_put(self.function, f"{c.INCOMING_PREFIX}*")  # uploads, and the presigned PUTs it signs
        docs.grant_read(self.function, f"{c.INCOMING_PREFIX}*")  # re-classifying a stored document
        docs.grant_read(self.function, f"{c.TEXT_PREFIX}*")
        docs.grant_put(self.function, f"{c.RESULTS_PREFIX}*")
        storage.models.grant_read(self.function)
        table.grant_read_write_data(self.function)

        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=removal_policy
        )
        self.api = apigw.LambdaRestApi(
            self,
            "Api",
            handler=self.function,
            proxy=False,
            description="Docflow REST API (FastAPI on Lambda); OpenAPI at /docs",
            binary_media_types=list(c.API_BINARY_MEDIA_TYPES),
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=removal_policy,
            deploy_options=apigw.StageOptions(
                stage_name=c.API_STAGE,
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # bodies carry documents: never log them
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
                throttling_rate_limit=c.API_THROTTLE_RATE,
                throttling_burst_limit=c.API_THROTTLE_BURST,
            ),
            default_method_options=apigw.MethodOptions(api_key_required=True),
        )
        # Everything goes to the app, which routes; a key is required except on the keyless paths.
        self.api.root.add_method("ANY")
        self.api.root.add_proxy(any_method=True)
        for path in c.API_KEYLESS_PATHS:
            self.api.root.add_resource(path).add_method("GET", api_key_required=False)
        page = self.api.root.add_resource(c.API_REVIEW_PAGE)
        page.add_method("GET", api_key_required=False)
        page.add_proxy(any_method=True)  # review/queue: keyed, as everything not named keyless
        page.add_resource("static").add_proxy(any_method=False).add_method("GET", api_key_required=False)

        plan = self.api.add_usage_plan(
            "UsagePlan",
            description="Default Docflow client plan",
            throttle=apigw.ThrottleSettings(rate_limit=c.API_THROTTLE_RATE, burst_limit=c.API_THROTTLE_BURST),
            quota=apigw.QuotaSettings(limit=c.API_DAILY_QUOTA, period=apigw.Period.DAY),
        )
        plan.add_api_stage(stage=self.api.deployment_stage)
        # The key's value never appears in the template or outputs: read it with
        # `aws apigateway get-api-key --api-key <id> --include-value`.
        self.key = self.api.add_api_key("ClientKey", description="Docflow client key")
        plan.add_api_key(self.key)
