"""LocalStack Lambda runtime executor that runs each function as a host subprocess (no Docker)."""

PLUGIN_NAME = "docflow-host"
