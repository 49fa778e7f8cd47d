from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin

from docflow_localstack_executor import PLUGIN_NAME


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = PLUGIN_NAME

    def load(self, *args, **kwargs):
        # Imported lazily: plux loads plugin classes while LocalStack starts, the executor only on first use.
        from docflow_localstack_executor.executor import HostRuntimeExecutor

        return HostRuntimeExecutor
