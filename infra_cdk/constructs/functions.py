"""The pipeline's Lambda functions and the layers they run on; one role each, grants via grant_*."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.constructs.storage import Storage
from layers.build import LAYERS

# Only the runtime package travels: no tests, caches or build leftovers.
CODE_EXCLUDES = ["**/__pycache__", "**/*.pyc", "*.egg-info", "**/*.egg-info"]


class PipelineFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        removal_policy: RemovalPolicy,
        host_mode: bool = False,
    ) -> None:
        """host_mode: LocalStack without Docker runs the functions as host processes, where /opt (the
        layers' mount point) does not exist and the host's Tesseract data is used instead."""
        super().__init__(scope, construct_id)
        runtime = lambda_.Runtime(c.PYTHON_RUNTIME, lambda_.RuntimeFamily.PYTHON)
        code = lambda_.Code.from_asset(str(c.FUNCTIONS_DIR), exclude=CODE_EXCLUDES)
        # In host mode the functions run on the project venv, which already has every dependency.
        self.layers = {} if host_mode else self._build_layers(runtime, removal_policy)
        environment = {
            "DOCFLOW_BACKEND": "aws",
            "DOCFLOW_DOCUMENTS_BUCKET": storage.documents.bucket_name,
            "DOCFLOW_MODEL_BUCKET": storage.models.bucket_name,
            "DOCFLOW_TABLE_NAME": storage.table.table_name,
            "DOCFLOW_HOME": "/tmp/docflow",
            "POWERTOOLS_SERVICE_NAME": c.SERVICE,
            "POWERTOOLS_METRICS_NAMESPACE": "Docflow",
            # Tesseract's own threads slow it down; Lambda scales out across documents and page ranges.
            "OMP_THREAD_LIMIT": "1",
        }
        if not host_mode:
            environment["TESSDATA_PREFIX"] = "/opt/tessdata"
        self._runtime, self._code, self._environment = runtime, code, environment
        self.functions: dict[str, lambda_.Function] = {
            name: self.build_function(self, name, spec, removal_policy) for name, spec in c.FUNCTIONS.items()
        }
        self._grant(storage)

    def build_function(
        self, scope: Construct, name: str, spec: c.FunctionSpec, removal_policy: RemovalPolicy
    ) -> lambda_.Function:
        """A function on the shared code asset, runtime, environment and the layers its spec names."""
        log_group = logs.LogGroup(
            scope, f"{name}Logs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=removal_policy
        )
        return lambda_.Function(
            scope,
            name,
            runtime=self._runtime,
            architecture=lambda_.Architecture.X86_64,
            code=self._code,
            handler=spec.handler,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_s),
            layers=[self.layers[layer] for layer in spec.layers if layer in self.layers],
            environment=self._environment,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            description=f"docflow: {spec.handler.rsplit('.', 2)[-2].replace('_', ' ')}",
        )

    def _build_layers(self, runtime: lambda_.Runtime, removal_policy: RemovalPolicy) -> dict[str, lambda_.LayerVersion]:
        return {
            name: lambda_.LayerVersion(
                self,
                f"{name.capitalize()}Layer",
                code=lambda_.Code.from_asset(str(c.LAYERS_BUILD_DIR / name)),
                compatible_runtimes=[runtime],
                compatible_architectures=[lambda_.Architecture.X86_64],
                description=f"docflow {name} dependencies (built by layers/build.py)",
                removal_policy=removal_policy,
            )
            for name in LAYERS
        }

    def _grant(self, storage: Storage) -> None:
        f = self.functions
        docs, table = storage.documents, storage.table
        docs.grant_read(f["Validate"], f"{c.INCOMING_PREFIX}*")
        docs.grant_read(f["ExtractText"], f"{c.INCOMING_PREFIX}*")
        docs.grant_read(f["ExtractPages"], f"{c.INCOMING_PREFIX}*")
        docs.grant_put(f["ExtractText"], f"{c.TEXT_PREFIX}*")
        docs.grant_put(f["ExtractPages"], f"{c.TEXT_PREFIX}*")
        docs.grant_read(f["MergeText"], f"{c.TEXT_PREFIX}*")
        docs.grant_put(f["MergeText"], f"{c.TEXT_PREFIX}*")
        docs.grant_read(f["Classify"], f"{c.TEXT_PREFIX}*")
        docs.grant_put(f["Classify"], f"{c.RESULTS_PREFIX}*")
        storage.models.grant_read(f["Classify"])
        for name in ("Validate", "RecordOutcome", "Classify", "RecordFailure"):
            table.grant_read_write_data(f[name])
        # The drift job reads the recent records (the by-status index) and the champion's baseline.
        table.grant_read_data(f["Drift"])
        storage.models.grant_read(f["Drift"])

    def __getitem__(self, name: str) -> lambda_.Function:
        return self.functions[name]
