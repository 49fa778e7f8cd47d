"""The Lambda side of observability: powertools' Logger, Tracer and Metrics, built once and imported by every
handler and the API; and the EMF sink of the signals (the signals themselves are docflow.telemetry)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

from docflow.telemetry import EmfSink

SERVICE = "docflow"
NAMESPACE = "Docflow"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)
# Lambda handlers install this (docflow/handlers/__init__.py): the signals as CloudWatch EMF.
emf_sink = EmfSink(metrics, namespace=NAMESPACE, service=SERVICE)
