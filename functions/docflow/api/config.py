"""The API's own settings (prefix DOCFLOW_, read once, like docflow.settings.Settings)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Lambda caps a synchronous invocation's payload at 6 MiB, and API Gateway hands binary bodies to it
# base64-encoded (4/3 larger): 4 MiB of file is what fits with room for the multipart framing and headers.
LAMBDA_SAFE_UPLOAD_BYTES = 4 * 1024 * 1024


class ApiSettings(BaseSettings):
    # env_ignore_empty: an empty DOCFLOW_API_* variable is unset, as for Settings.
    model_config = SettingsConfigDict(env_prefix="DOCFLOW_", extra="ignore", frozen=True, env_ignore_empty=True)

    # x-api-key for everything but /health and the docs. Unset: no check in the app (on AWS API Gateway
    # checks its own key; `docflow serve` then only listens on loopback, see server.py).
    api_key: SecretStr | None = None
    # Bodies sent to POST /documents and POST /upload-and-predict; bigger files use an upload URL.
    api_max_upload_bytes: int = Field(default=LAMBDA_SAFE_UPLOAD_BYTES, gt=0)
    # POST /upload-and-predict: wall-time budget (below API Gateway's 29 s) and page cap.
    api_sync_timeout: float = Field(default=25.0, gt=0)
    api_sync_max_pages: int = Field(default=5, gt=0)
    api_upload_url_expires: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    # `docflow serve`: seconds a stopping server waits for documents in flight before it records them.
    api_shutdown_grace: float = Field(default=30.0, ge=0)
    # Accepted uploads waiting for a local worker before POST /documents answers 503.
    api_max_queue: int = Field(default=10_000, gt=0)

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


@lru_cache(maxsize=1)
def get_api_settings() -> ApiSettings:
    return ApiSettings()
