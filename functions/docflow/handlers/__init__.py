"""The Lambda handlers. Importing any of them sends the pipeline's signals (docflow.telemetry) to CloudWatch
as embedded metric format through powertools."""

from docflow import telemetry
from docflow.powertools import emf_sink

telemetry.configure(emf_sink)
