"""Combine two trained model directories into one that Classify serves (`docflow model combine`).

The combined directory is the PRIMARY model's directory (its graph, tokenizer and labels.json) with the
PARTNER's graph, tokenizer and config.json beside it (``partner_model.onnx``, ``partner_tokenizer.json``,
``partner_config.json``), and config.json's ``partner_weight`` w: the runtime (docflow.domain.classifier) serves
the normalized weighted geometric mean of the two models' probabilities, p ∝ exp((1-w)·log p_primary +
w·log p_partner) (``docflow.domain.encoding.pool_partner``). Both graphs must output the classes of one
labels.json in one order; a pair whose classes differ, or are the same in another order, is refused.

Nothing of the members' own evaluation travels: their scan heads were fitted on their own probabilities, not the
combination's (``--scans`` fits the combination's head), and their metrics.json, baseline.json and review
threshold describe another model. With a held-out corpus the combination is scored through the runtime that
will serve it, its review threshold calibrated as training calibrates one (``review_threshold_for``,
``served_review_threshold``: the held-out split as is and through the OCR-noise channel), and its drift baseline
is its predictions there. A corpus a member was trained on is never scored whole: its held-out split is
reproduced from the member's seed and fraction (``stratified_split``), and two members that split it
differently are refused (no document would be held out from both).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from docflow.domain.classifier import ModelIncompatibleError, ModelNotFoundError, TextClassifier
from docflow.domain.encoding import pool_partner
from docflow.domain.model_files import (
    CONFIG_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PARTNER_CONFIG_FILE,
    PARTNER_FILES,
    PARTNER_MODEL_FILE,
    PARTNER_TOKENIZER_FILE,
    TOKENIZER_FILE,
)
from docflow_training.data import CorpusError, Document, dataset_digest, load_corpus, stratified_split
from docflow_training.families import CombineError
from docflow_training.model_dir import model_dir_target_problem, staged_model_dir
from docflow_training.registry import text_sha256
from docflow_training.scans import Scan
from docflow_training.train import (
    calibrate_review,
    score_probabilities,
    write_holdout_baseline,
    write_json,
    write_scan_head,
)

logger = logging.getLogger(__name__)

DEFAULT_WEIGHT = 0.5
# The runtime pools in float64 and serves float32; the same arithmetic on the same inputs. Anything near this
# is a bug (the served directory pooling other files, or another formula), not rounding.
POOLING_PARITY_TOLERANCE = 1e-5
# When a member's config does not say how its review threshold was calibrated (train.py's defaults).
DEFAULT_TARGET_PRECISION = 0.95
DEFAULT_CONFIDENCE = 0.9


@dataclass(frozen=True)
class Holdout:
    """The labelled documents the combination is scored and calibrated on, and where they come from."""

    docs: list[Document]
    source: str
    seed: int | None = None


def check_weight(weight: float) -> float:
    """``weight`` as a float strictly between 0 and 1, or CombineError (0 or 1 would be one model alone)."""
    weight = float(weight)
    if not (math.isfinite(weight) and 0.0 < weight < 1.0):
        raise CombineError(
            f"weight {weight:g}: the partner's weight must be strictly between 0 and 1 (0 or 1 is one model alone)"
        )
    return weight


def load_member(model_dir: Path, role: str) -> TextClassifier:
    """One of the two models to combine, loaded by the runtime (so it is known to serve), or CombineError."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CombineError(f"No such {role} model directory: {model_dir}")
    try:
        member = TextClassifier(model_dir)
    except (ModelNotFoundError, ModelIncompatibleError) as exc:
        raise CombineError(f"{role} model {model_dir}: {exc}") from None
    if member.config.partner_weight is not None or any((model_dir / name).exists() for name in PARTNER_FILES):
        raise CombineError(f"{role} model {model_dir} is already a combined model: combine two single models")
    return member


def check_labels(primary: TextClassifier, partner: TextClassifier) -> None:
    """The two models output the same classes in the same order (the combined directory has one labels.json)."""
    if primary.labels == partner.labels:
        return
    first, second = list(primary.labels), list(partner.labels)
    if sorted(first) == sorted(second):
        raise CombineError(
            f"the models' labels.json name the same classes in another order ({primary.model_dir}: "
            f"{', '.join(first)}; {partner.model_dir}: {', '.join(second)}): their probabilities cannot be "
            "pooled column by column; train the partner with the primary's classes in its order"
        )
    only_primary = sorted(set(first) - set(second))
    only_partner = sorted(set(second) - set(first))
    raise CombineError(
        f"the models' classes differ: only {primary.model_dir} has {', '.join(only_primary) or 'none'}; only "
        f"{partner.model_dir} has {', '.join(only_partner) or 'none'}"
    )


def check_combination(primary: Path, partner: Path, out: Path) -> tuple[TextClassifier, TextClassifier]:
    """The two members loaded, once they are known to combine into ``out``: CombineError (a member missing or
    already combined, other classes, ``out`` one of them) or FileExistsError (``out`` holds other files).
    Cheap (the two models loaded): a command checks this before reading scans for minutes."""
    first = load_member(primary, "primary")
    second = load_member(partner, "partner")
    check_labels(first, second)
    if Path(out).resolve() in (Path(primary).resolve(), Path(partner).resolve()):
        raise CombineError(f"--out {out} is one of the models being combined: write the combination elsewhere")
    problem = model_dir_target_problem(Path(out))
    if problem:
        raise FileExistsError(problem)
    return first, second


def combined_version(primary_version: str, partner_version: str, weight: float) -> str:
    """A short hash of both members' versions and the weight: the same combination is the same version."""
    return hashlib.sha256(f"{primary_version}+{partner_version}@{weight!r}".encode()).hexdigest()[:12]


def _member_config(member: TextClassifier) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((member.model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    return raw


def _split_of(raw_config: dict[str, Any], role: str, folder: Path) -> tuple[int, float]:
    train_config = raw_config.get("train_config") or {}
    seed, fraction = train_config.get("seed"), train_config.get("holdout_fraction")
    if not isinstance(seed, int) or not isinstance(fraction, int | float):
        raise CombineError(
            f"the {role} model was trained on {folder} but its config.json does not say how it split it "
            "(train_config.seed, holdout_fraction): give a held-out corpus neither model was trained on"
        )
    return seed, float(fraction)


def holdout_from_corpus(folder: Path, members: dict[str, dict[str, Any]]) -> Holdout:
    """The documents of ``folder`` neither member was trained on. A member trained on this corpus: the held-out
    split it trained without (same seed and fraction, reproduced by ``stratified_split``). A member trained on
    another corpus: that corpus is read where its config.json says it is, checked unchanged, its training split
    reproduced, and every document of ``folder`` with the same text left out (a blank page never: it teaches
    nothing, as at the gate). CombineError where that cannot be checked. ``members``: role -> its config.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CombineError(f"No such held-out corpus folder: {folder}")
    try:
        digest = dataset_digest(folder)
        docs = load_corpus(folder)
    except CorpusError as exc:
        raise CombineError(f"held-out corpus {folder}: {exc}") from None
    splits: dict[str, tuple[int, float]] = {}
    seen_texts: set[str] = set()  # what members trained on other corpora saw
    for role, raw in members.items():
        data = raw.get("training_data") or {}
        same_content = data.get("sha256") == digest.sha256
        same_path = bool(data.get("path")) and Path(str(data["path"])).resolve() == folder.resolve()
        if same_content:
            splits[role] = _split_of(raw, role, folder)
        elif same_path:
            raise CombineError(
                f"the {role} model was trained on {folder} as it was then (sha256 {str(data.get('sha256'))[:12]}), "
                "which has changed since (users' labels added, or edited): its held-out split cannot be "
                "reproduced; give a held-out corpus neither model was trained on"
            )
        else:
            seen_texts |= _trained_texts(raw, role, folder)
    held_out, seed, fraction = docs, None, None
    if splits:
        if len(set(splits.values())) > 1:
            shown = "; ".join(f"{role}: seed {s}, fraction {f:g}" for role, (s, f) in splits.items())
            raise CombineError(
                f"the models were trained on {folder} with different held-out splits ({shown}): no split of it is "
                "held out from both; give a held-out corpus neither model was trained on"
            )
        seed, fraction = next(iter(splits.values()))
        _, held_out = stratified_split(docs, fraction, seed)
    kept = [doc for doc in held_out if not doc.text.strip() or text_sha256(doc.text) not in seen_texts]
    if not kept:
        raise CombineError(f"every document of {folder} was trained on by a member: give documents neither saw")
    parts = []
    if splits:
        trained = " and ".join(splits)
        parts.append(
            f"its held-out split (seed {seed}, fraction {fraction:g}), which the {trained} "
            f"model{'s were' if len(splits) > 1 else ' was'} trained without"
        )
    if len(kept) < len(held_out) or not splits:
        parts.append(f"{len(held_out) - len(kept)} documents a member trained on elsewhere left out")
    return Holdout(kept, f"{folder} ({len(kept)} of {len(docs)} documents: {'; '.join(parts)})", seed)


def _trained_texts(raw_config: dict[str, Any], role: str, folder: Path) -> set[str]:
    """The sha256 of every non-blank text a member trained on, from the corpus its config.json names, read there
    and checked unchanged; CombineError where that cannot be done."""
    data = raw_config.get("training_data") or {}
    where, sha = data.get("path"), data.get("sha256")
    if not where or not sha:
        raise CombineError(
            f"the {role} model's config.json does not say what it was trained on: whether it saw the documents of "
            f"{folder} cannot be checked; combine without --holdout, or with a model trained by docflow train"
        )
    source = Path(str(where))
    try:
        unchanged = source.is_dir() and dataset_digest(source).sha256 == sha
    except (CorpusError, OSError):
        unchanged = False
    if not unchanged:
        raise CombineError(
            f"the {role} model was trained on {where} (sha256 {str(sha)[:12]}), which is not here as it was: "
            f"whether it saw the documents of {folder} cannot be checked; run this where that corpus is, or give "
            "a held-out corpus the model was trained on (its held-out split is then used)"
        )
    seed, fraction = _split_of(raw_config, role, source)
    train, _ = stratified_split(load_corpus(source), fraction, seed)
    return {text_sha256(doc.text) for doc in train if doc.text.strip()}


def _describe(member: TextClassifier) -> dict[str, Any]:
    return {"name": member.config.name, "version": member.config.version, "family": member.config.family}


def _calibration(raw_config: dict[str, Any]) -> dict[str, float]:
    train_config = raw_config.get("train_config") or {}
    return {
        "target_precision": float(train_config.get("review_target_precision", DEFAULT_TARGET_PRECISION)),
        "confidence": float(train_config.get("review_confidence", DEFAULT_CONFIDENCE)),
    }


def _member_scores(y_true: list[str], probabilities: np.ndarray, labels: list[str]) -> dict[str, Any]:
    scores = score_probabilities(y_true, probabilities, labels)
    return {k: scores[k] for k in ("accuracy", "macro_f1", "log_loss")}


def combine_model_dirs(
    primary: Path,
    partner: Path,
    weight: float,
    out: Path,
    holdout: Path | Sequence[Document] | None = None,
    *,
    scans: Sequence[Scan] | None = None,
    scans_source: str | None = None,
) -> dict[str, Any]:
    """Write the combined model directory ``out`` (atomically: staged beside it, then renamed over any earlier
    model there) serving ``primary`` and ``partner`` pooled with the partner's ``weight``; returns its
    metrics.json content.

    ``holdout``: a labelled corpus folder (a folder per class; only the documents neither member was trained on
    are used, see ``holdout_from_corpus``) or the documents themselves. With one, the combination is scored on
    it, its review threshold calibrated there and its drift baseline written; without, it is served with the
    higher of the members' review thresholds, not recalibrated, and has no baseline. With ``scans`` (real
    labelled scans, ``docflow_training.scans.read_scans``) a scan head is fitted on the combination's
    probabilities, as `docflow train --no-track --scans` fits one (``write_scan_head``).

    Raises CombineError for a pair or options that cannot be combined (one line), FileExistsError for an
    ``out`` that is not a model directory."""
    started = time.perf_counter()
    weight = check_weight(weight)
    primary, partner, out = Path(primary), Path(partner), Path(out)
    first, second = check_combination(primary, partner, out)
    labels = list(first.labels)
    primary_config, partner_config = _member_config(first), _member_config(second)
    if holdout is None:
        held: Holdout | None = None
    elif isinstance(holdout, str | Path):
        held = holdout_from_corpus(Path(holdout), {"primary": primary_config, "partner": partner_config})
    else:
        held = Holdout(list(holdout), f"{len(holdout)} documents given")
    if held is not None and not held.docs:
        raise CombineError(f"the held-out set is empty: {held.source}")
    if held is not None and (unknown := sorted({doc.label for doc in held.docs} - set(labels))):
        raise CombineError(f"the held-out documents have classes the models lack: {', '.join(unknown)}")

    version = combined_version(first.config.version, second.config.version, weight)
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    combined: dict[str, Any] = {"primary": _describe(first), "partner": _describe(second), "weight": weight}
    model_config: dict[str, Any] = {
        **primary_config,
        "version": version,
        "created_at": created_at,
        # what the MLflow run and /model show: the combination, not its primary's architecture
        "architecture": f"combined: {primary_config.get('architecture', first.config.family)} + "
        f"{partner_config.get('architecture', second.config.family)}",
        "partner_weight": weight,
        "combined": combined,
    }
    calibration = _calibration(primary_config)

    with staged_model_dir(out) as staging:
        for source, name in (
            (primary / MODEL_FILE, MODEL_FILE),
            (primary / TOKENIZER_FILE, TOKENIZER_FILE),
            (primary / LABELS_FILE, LABELS_FILE),
            (partner / MODEL_FILE, PARTNER_MODEL_FILE),
            (partner / TOKENIZER_FILE, PARTNER_TOKENIZER_FILE),
            (partner / CONFIG_FILE, PARTNER_CONFIG_FILE),  # the partner's own, unchanged
        ):
            shutil.copyfile(source, staging / name)
        metrics: dict[str, Any] = {
            "model_name": model_config["name"],
            "model_version": version,
            "created_at": created_at,
            "family": first.config.family,
            "architecture": model_config["architecture"],
            "combined": {
                **combined,
                "primary": {**combined["primary"], "source": str(primary)},
                "partner": {**combined["partner"], "source": str(partner)},
                "pooling": "p ∝ exp((1-w)·log p_primary + w·log p_partner), w the partner's weight",
            },
        }
        if held is None:
            thresholds = [t for t in (first.config.review_threshold, second.config.review_threshold) if t is not None]
            threshold = max(thresholds) if thresholds else None
            logger.warning(
                "no held-out corpus: the combination is served with the higher of the members' review thresholds "
                "(%s), not calibrated on its own probabilities",
                threshold,
            )
            model_config["review_threshold"] = threshold
            metrics["holdout"] = None
            metrics["review_threshold"] = {
                "threshold": threshold,
                "reached": None,
                "rule": "no held-out corpus: the higher of the members' calibrated thresholds, not recalibrated",
            }
            write_json(staging / CONFIG_FILE, model_config)
            served = TextClassifier(staging)
        else:
            model_config["review_threshold"] = None  # calibrated below, on the combination's probabilities
            write_json(staging / CONFIG_FILE, model_config)
            served = TextClassifier(staging)
            review, probabilities = _evaluate_holdout(served, first, second, weight, held, labels, calibration, metrics)
            # The served threshold travels with the model, so a promoted champion brings its own calibration.
            model_config["review_threshold"] = review["threshold"]
            write_json(staging / CONFIG_FILE, model_config)
            served = TextClassifier(staging)  # as it will be served: with its threshold
            # What drift is measured against (docflow drift): the combination's predictions on the held-out set.
            write_holdout_baseline(
                staging,
                probabilities,
                labels,
                model_name=model_config["name"],
                model_version=version,
                created_at=created_at,
                source=held.source,
            )
        metrics["combine_seconds"] = round(time.perf_counter() - started, 2)
        write_json(staging / METRICS_FILE, metrics)
        if scans:
            threshold_for_text = served.review_threshold()
            metrics["real_scans"] = write_scan_head(staging, served, scans, scans_source, threshold_for_text)
            write_json(staging / METRICS_FILE, metrics)
        del served  # release the sessions' file handles before the directory moves
    logger.info(
        "wrote %s: %s v%s + %s v%s, partner weight %g%s",
        out,
        first.config.name,
        first.config.version,
        second.config.name,
        second.config.version,
        weight,
        f"; held-out accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
        f"({metrics['n_holdout']} documents)"
        if held is not None
        else "",
    )
    return metrics


def _evaluate_holdout(
    served: TextClassifier,
    first: TextClassifier,
    second: TextClassifier,
    weight: float,
    held: Holdout,
    labels: list[str],
    calibration: dict[str, float],
    metrics: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray]:
    """Score the combination on the held-out documents through the runtime that serves it (``served``), as is
    and through the OCR-noise channel, check it pools the members as stated, and fill ``metrics``; returns
    the served review threshold's calibration (``served_review_threshold``) and the held-out probabilities."""
    texts = [doc.text for doc in held.docs]
    y_true = [doc.label for doc in held.docs]
    logger.info("scoring the combination on %d held-out documents (%s)", len(texts), held.source)
    probabilities = served.predict_proba(texts)
    members = {"primary": first.predict_proba(texts), "partner": second.predict_proba(texts)}
    parity = float(np.max(np.abs(probabilities - pool_partner(members["primary"], members["partner"], weight))))
    if parity > POOLING_PARITY_TOLERANCE:
        raise RuntimeError(
            f"the combined directory serves probabilities {parity:.2e} away from pooling its members' "
            f"(tolerance {POOLING_PARITY_TOLERANCE})"
        )
    noised, review = calibrate_review(
        held.docs,
        probabilities,
        served.predict_proba,
        labels,
        calibration["target_precision"],
        calibration["confidence"],
    )
    metrics.update(
        {
            **score_probabilities(y_true, probabilities, labels),
            "n_holdout": len(texts),
            "holdout": {"source": held.source, "n_documents": len(texts), "seed": held.seed},
            "members_on_holdout": {role: _member_scores(y_true, p, labels) for role, p in members.items()},
            "pooling_max_abs_diff": parity,
            "review_threshold": review,
            "holdout_ocr_noise": {
                "channel": "docflow_training.noise.HEAVY",
                **{k: noised[k] for k in ("accuracy", "macro_f1", "log_loss", "review_threshold", "per_class")},
            },
        }
    )
    return review, probabilities


__all__ = [
    "DEFAULT_WEIGHT",
    "CombineError",
    "Holdout",
    "check_combination",
    "check_labels",
    "check_weight",
    "combine_model_dirs",
    "combined_version",
    "holdout_from_corpus",
    "load_member",
]
