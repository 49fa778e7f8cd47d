"""What every AWS adapter shares: botocore's client configuration, and the translation of an AWS failure
into the pipeline's error contract (TransientError: retry; ConfigurationError: fix the deployment)."""

from __future__ import annotations

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from docflow.errors import ConfigurationError, TransientError

# botocore's own retries (adaptive, with backoff) absorb most throttling before we see it.
BOTO_CONFIG = Config(retries={"max_attempts": 5, "mode": "adaptive"}, connect_timeout=5, read_timeout=30)

TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "TransactionConflictException",
    }
)
CONFIG_CODES = frozenset({"NoSuchBucket", "ResourceNotFoundException", "AccessDenied", "AccessDeniedException"})


def translate(exc: Exception, what: str) -> Exception:
    """Map an AWS failure to the pipeline's error contract (retry vs fail)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        # A HEAD's error has no body: its code is the bare HTTP status ("503"). A 5xx is the service's fault.
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in TRANSIENT_CODES or status >= 500:
            return TransientError(f"{what}: {code}")
        if code in CONFIG_CODES:
            return ConfigurationError(f"{what}: {code}: {exc.response.get('Error', {}).get('Message', '')}")
        return exc
    if isinstance(exc, BotoCoreError):  # connection reset, endpoint timeout
        return TransientError(f"{what}: {exc}")
    return exc
