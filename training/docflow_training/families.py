"""The model families a training job can fit, and the typed configs of the transformer and combined families.

``combined``: the job trains the linear model and the transformer on one corpus (one seed: one held-out split)
and ships them as one combined model directory (``docflow_training.combine``), pooled with ``partner_weight``.

Kept apart from ``docflow_training.transformer`` (which imports torch): the job's config (``entry.JobConfig``)
validates a transformer run's hyperparameters without loading PyTorch, and a linear run never loads it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Family = Literal["linear", "transformer", "combined"]
FAMILIES: tuple[str, ...] = ("linear", "transformer", "combined")


class TransformerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    # The same split as the linear family for the same seed, so the two are judged on the same documents.
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    epochs: int = Field(default=3, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    # Steps of linear warm-up (as a share of all steps) before the linear decay to zero: a freshly
    # initialized head's first gradients would otherwise shake the pretrained encoder.
    warmup_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    batch_size: int = Field(default=16, ge=1)  # documents per step (each up to max_chunks graph rows)
    # Tokens per window, [CLS] and [SEP] included; MiniLM was pre-trained on windows of up to 512.
    max_length: int = Field(default=128, ge=3, le=512)
    max_chunks: int = Field(default=4, ge=1)
    max_chars: int = Field(default=20_000, gt=0)
    # A quick run (tests, smoke checks): this many training documents, taken class by class in turn.
    max_train_docs: int | None = Field(default=None, ge=1)
    # Each epoch a training document is read through the OCR-noise channel (noise.HEAVY) with this
    # probability, so the model sees both clean corpus text and text as rough as production OCR.
    noise_probability: float = Field(default=0.5, ge=0.0, le=1.0)
    eval_batch_size: int = Field(default=32, ge=1)  # documents per inference batch
    # Held-out documents on which the fp32 graph is checked against torch before anything is written.
    parity_docs: int = Field(default=64, ge=1)
    # The int8 graph ships only if it names the same top class as fp32 on at least this share of the held-out
    # documents; else the fp32 graph ships (90 MB, inside the 100 MB budget). One CPU run of 2 epochs agreed
    # on 94.7 %: dynamic int8 moved 1 document in 19.
    min_int8_agreement: float = Field(default=0.99, ge=0.0, le=1.0)
    model_name: str = "docflow-classifier"
    version: str | None = None  # default: a content hash of the model files
    # The review threshold, calibrated as the linear family's (train.TrainConfig says why these values).
    review_target_precision: float = Field(default=0.95, gt=0.0, lt=1.0)
    review_confidence: float = Field(default=0.9, ge=0.5, lt=1.0)


class CombinedConfig(BaseModel):
    """The combined family's own settings; the members' are the linear and transformer configs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The transformer's weight in the pooled log-probabilities (combine.DEFAULT_WEIGHT; 0 or 1: one model alone).
    partner_weight: float = Field(default=0.5, gt=0.0, lt=1.0)
    # A finished transformer model directory to combine instead of training one (a local run reusing a
    # transformer trained earlier on the same corpus with the same seed and held-out fraction).
    partner_dir: str | None = None


class CombineError(ValueError):
    """Two model directories that cannot be combined as asked; the message is one line. Here, beside the family
    configs, so the job's entry point can tell it from a crash without importing the ML runtime."""
