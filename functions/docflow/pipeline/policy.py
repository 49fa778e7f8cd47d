"""The pipeline's one retry and catch policy.

Both the CDK state machine (infra_cdk) and the embedded runner (pipeline/runner.py) read these values,
so a document is retried the same way on a laptop and on AWS.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict


class RetryRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    errors: tuple[str, ...]
    interval_seconds: float
    max_attempts: int  # retries after the first attempt, as in Step Functions' MaxAttempts
    backoff_rate: float
    max_delay_seconds: float
    jitter: bool = True  # Step Functions' JitterStrategy FULL

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry `retry_number` (1-based)."""
        base = min(self.interval_seconds * self.backoff_rate ** (retry_number - 1), self.max_delay_seconds)
        return (rng or random).uniform(0, base) if self.jitter else base


# Errors Lambda itself raises when the service, not our code, hiccups.
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
)

RETRY_RULES: tuple[RetryRule, ...] = (
    RetryRule(
        errors=LAMBDA_SERVICE_ERRORS,
        interval_seconds=2,
        max_attempts=6,
        backoff_rate=2,
        max_delay_seconds=60,
    ),
    RetryRule(
        errors=("TransientError",),
        interval_seconds=1,
        max_attempts=3,
        backoff_rate=2,
        max_delay_seconds=30,
    ),
)

# Anything not retried (or retried out) is caught and recorded FAILED with its error and cause.
CATCH_ERRORS: tuple[str, ...] = ("States.ALL",)
# Where the caught error lands in the state, for the RecordFailure step.
ERROR_RESULT_PATH = "$.error"


def retry_rule_for(error_name: str) -> RetryRule | None:
    """The first rule naming this error exactly, as Step Functions matches a Lambda's errorType."""
    return next((rule for rule in RETRY_RULES if error_name in rule.errors), None)
