"""Lambda: the REST API (API Gateway REST proxy → Mangum → the FastAPI app).

Binary bodies (multipart/form-data, application/pdf, image/*) arrive base64-encoded with isBase64Encoded
true; Mangum decodes them. The request id of API Gateway is the log's correlation id and the response's
x-request-id. The app is built at import, its stores and model on first use; no training library loads.
"""

from typing import Any, cast

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from docflow.api.app import create_app
from docflow.powertools import logger, metrics, tracer

app = create_app()
asgi_handler = Mangum(app, lifespan="off")


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Mangum declares its own LambdaContext protocol; powertools' type is the same object.
    response: dict[str, Any] = asgi_handler(event, cast(Any, context))
    status = int(response.get("statusCode", 500))
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    if status >= 500:
        metrics.add_metric(name="ApiServerErrors", unit=MetricUnit.Count, value=1)
    elif status >= 400:
        metrics.add_metric(name="ApiClientErrors", unit=MetricUnit.Count, value=1)
    return response


# The powertools decorators wrap with functools.wraps; this pins the name X-Ray and logs show regardless.
handler.__name__ = "handler"
