"""Prometheus on the API: request durations by route template (every deployment), and GET /metrics
(`docflow serve` only: on Lambda the signals go to CloudWatch, and a function's registry means nothing)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docflow import telemetry
from docflow.context import StepContext

UNMATCHED = "unmatched"  # no route: one label value, not one per probed path


class RequestMetricsMiddleware:
    """api_request_duration_seconds{endpoint, method, status}; endpoint is the matched route's template
    (/documents/{document_id}), so the label's values are bounded by the routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The router records the matched route in the (shared) scope.
            endpoint = getattr(scope.get("route"), "path", None) or UNMATCHED
            telemetry.api_request(endpoint, scope.get("method", "GET"), status, time.perf_counter() - started)


def install_metrics_endpoint(app: FastAPI, sink: telemetry.PrometheusSink) -> None:
    """GET /metrics: the Prometheus exposition of `sink`. Not behind the API key (loopback or a scraper's
    network; it holds counts, never a document)."""

    def metrics() -> Response:
        body, content_type = sink.exposition()
        return Response(content=body, media_type=content_type)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False, name="metrics")


def report_loaded_model(ctx: StepContext) -> bool:
    """model_accuracy of the model this server classifies with; False if none loads (logged by the API)."""
    try:
        model = ctx.classifier()
        raw = model.metrics
    except Exception:  # no model yet, or an unreadable metrics.json: /health says so, the gauge stays unset
        return False
    telemetry.model_metrics(model.version, raw)
    return True
