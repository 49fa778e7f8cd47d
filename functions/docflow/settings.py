"""One settings model, read from the environment (prefix DOCFLOW_) once at start.

Domain code never reads os.environ: it receives these values as arguments. A bad value fails loudly
here, once; ``describe_errors`` turns pydantic's error into one line per variable (its name, the value
given, what is expected). A variable set to the empty string counts as unset (``DOCFLOW_HOME=`` is the
default ~/.docflow, not the current folder).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from docflow.faults import parse_faults
from docflow.values import OcrOptions, ValidationLimits

PACKAGE_DIR = Path(__file__).resolve().parent
# Built by set-up (`make model`) from the labelled corpus; what a fresh DOCFLOW_HOME classifies with.
DEFAULT_MODEL_DIR = PACKAGE_DIR / "default_model"


ENV_PREFIX = "DOCFLOW_"


class Settings(BaseSettings):
    # env_ignore_empty: a variable set to "" is unset (the default applies), as shells and CI templates
    # often export empty values; DOCFLOW_HOME= must not put the state into the current folder.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True)

    # Where it runs: "local" = directory + SQLite under `home`; "aws" = S3 + DynamoDB.
    backend: Literal["local", "aws"] = "local"
    # State directory (DOCFLOW_HOME): blobs, the SQLite record store, published models, metrics. Unset or
    # empty: ~/.docflow.
    home: Path = Field(default_factory=lambda: Path.home() / ".docflow")

    # AWS backend
    documents_bucket: str | None = None
    model_bucket: str | None = None
    table_name: str | None = None

    # Model: an explicit directory wins; otherwise the published champion, else the set-up default.
    model_dir: Path | None = None
    # How long a running process serves the champion it resolved before reading the pointer again.
    model_refresh_seconds: float = Field(default=60.0, ge=0.0)
    # Below this confidence a document is NEEDS_REVIEW. None: the threshold calibrated for the model being
    # served (config.json), so a newly promoted champion brings its own.
    review_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    # Retraining on AWS: every this many new labels, an event on this bus starts the training state machine
    # (docflow/retrain.py); 0 = labels never trigger it (the schedule still does).
    retrain_label_threshold: int = Field(default=0, ge=0)
    event_bus_name: str = "default"

    # Drift: PSI per signal between the model's held-out baseline and the predictions of the last hours.
    drift_threshold: float = Field(default=0.2, gt=0.0)
    drift_window_hours: float = Field(default=24.0, gt=0.0)
    # Below this many predictions in the window no score is given: sampling noise alone inflates PSI (windows
    # drawn from the default model's own held-out predictions: 100 exceed 0.2 in ~8% of draws, 200 in <1%).
    drift_min_predictions: int = Field(default=200, ge=1)

    # Validation limits
    max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_pages: int = Field(default=500, gt=0)
    max_pixels_per_page: int = Field(default=100_000_000, gt=0)
    max_dimension: int = Field(default=20_000, gt=0)

    # Long PDFs are split into page ranges extracted in parallel (a Map on AWS).
    large_pdf_pages: int = Field(default=20, ge=1)
    pages_per_chunk: int = Field(default=10, ge=1)

    # OCR
    ocr_languages: str = "eng"
    ocr_render_dpi: int = Field(default=200, ge=50, le=600)
    ocr_upscale_below_height: int = Field(default=1800, ge=0)
    # at most this much, towards a 3000-px-tall page (3: slightly better on 100-dpi scans, ~40 % fewer pages/s)
    ocr_upscale_factor: float = Field(default=2.0, ge=1.0, le=4.0)
    ocr_page_timeout: float = Field(default=120.0, gt=0)
    # a page read less confidently than this (mean word confidence) has its orientation checked; 0: never
    ocr_orientation_check_below: float = Field(default=50.0, ge=0.0, le=100.0)

    # A document left unfinished (PROCESSING) longer than this is an orphan of a run that died (a killed
    # `docflow process`, a timed-out or aborted execution): the next delivery of its content takes the work
    # over. Longer than any run may take: the state machine stops an execution after 2 hours.
    processing_lease_seconds: float = Field(default=3 * 3600.0, gt=0.0)

    # Fault injection for tests and drills (docflow/faults.py): e.g. "ExtractText=transient:2,Classify=permanent".
    faults: str = ""
    faults_seed: int = 0

    @field_validator("ocr_languages")
    @classmethod
    def _languages(cls, value: str) -> str:
        parts = [p for p in value.replace(",", "+").split("+") if p]
        if not parts or not all(p.isalnum() or "_" in p for p in parts):
            raise ValueError(f"expected tesseract language codes like 'eng' or 'eng+rus', got {value!r}")
        return "+".join(parts)

    @field_validator("faults")
    @classmethod
    def _faults(cls, value: str) -> str:
        parse_faults(value)  # a ValueError here names the bad entry
        return value

    @property
    def limits(self) -> ValidationLimits:
        return ValidationLimits(
            max_bytes=self.max_bytes,
            max_pages=self.max_pages,
            max_pixels_per_page=self.max_pixels_per_page,
            max_dimension=self.max_dimension,
        )

    @property
    def ocr(self) -> OcrOptions:
        return OcrOptions(
            languages=self.ocr_languages,
            render_dpi=self.ocr_render_dpi,
            upscale_below_height=self.ocr_upscale_below_height,
            upscale_factor=self.ocr_upscale_factor,
            timeout_seconds=self.ocr_page_timeout,
            orientation_check_below=self.ocr_orientation_check_below,
        )


_SECRET_WORDS = ("key", "secret", "password", "token")


def describe_errors(
    exc: ValidationError, given_as: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX
) -> list[str]:
    """One line per bad setting of a DOCFLOW_-prefixed settings model (Settings, ApiSettings): the variable
    (``prefix`` + the field's name; or, for a field in ``given_as``, the command-line option it came from), the
    value, what is expected.
    Values of secret-looking fields are not shown."""
    lines = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = (given_as or {}).get(field) or f"{prefix}{field.upper()}"
        value = "(hidden)" if any(word in field for word in _SECRET_WORDS) else repr(error.get("input"))
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}={value}: {message}")
    return lines


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    # Tesseract's OpenMP threads make it ~3.7x slower on small machines; parallelism is across pages.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    return Settings()
