"""The model registry and the promotion gate.

Registered model ``docflow-classifier``; each training run adds a version. Aliases:

* ``challenger`` — the newest version put to the gate;
* ``champion`` — the version that serves (published to the model bucket / DOCFLOW_HOME).

The gate compares challenger and champion on *the same* documents: the challenger's held-out set
(its validation channel when the job had one, else the split train_model held out), minus any
document the champion was trained on — a model scores near-perfectly on its own training data,
and counting those would make every champion look unbeatable. Both models are run over those
documents through the serving runtime. The challenger is promoted only if its macro-F1 beats the
champion's by more than ``min_macro_f1_gain`` and no class's recall drops by more than
``max_recall_drop``. With no champion, the first version is promoted. The decision and its numbers
are kept as tags on the version (``gate.*``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from docflow.domain.class_metrics import class_metrics
from docflow.domain.class_names import canonical_class
from docflow.domain.model_files import MODEL_FILES
from docflow_training.tracking import (
    GATE_ARTIFACTS,
    HOLDOUT_FILE,
    REGISTERED_MODEL,
    TRAIN_MANIFEST_FILE,
    Tracking,
    connect,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked (no such version, nothing to roll back to, …)."""


class GatePolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The challenger's macro-F1 must exceed the champion's by more than this (0: any improvement).
    min_macro_f1_gain: float = Field(default=0.0, ge=-1.0, le=1.0)
    # No class's recall may fall by more than this (absolute, 0..1).
    max_recall_drop: float = Field(default=0.05, ge=0.0, le=1.0)
    # Fewer shared held-out documents than this and the comparison is refused as meaningless: on a handful
    # of documents a model trained on shuffled labels can "beat" the champion (one was promoted on 2).
    min_eval_docs: int = Field(default=30, ge=1)


@dataclass(frozen=True)
class HeldOutDoc:
    path: str
    label: str
    sha256: str
    text: str


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def write_holdout(docs: Iterable[Any], path: Path) -> int:
    """``docs`` (anything with path, label, text) as JSON lines, each with its text's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for doc in docs:
            row = {"path": doc.path, "label": doc.label, "sha256": text_sha256(doc.text), "text": doc.text}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_holdout(path: Path) -> list[HeldOutDoc]:
    with path.open(encoding="utf-8") as fh:
        return [HeldOutDoc(**json.loads(line)) for line in fh if line.strip()]


def write_train_manifest(docs: Iterable[Any], path: Path) -> int:
    """The sha256 of every training text: enough to tell later whether a model has seen a document."""
    hashes = sorted({text_sha256(doc.text) for doc in docs})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"text_sha256": hashes}) + "\n", encoding="utf-8")
    return len(hashes)


@dataclass
class Scores:
    n_docs: int
    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    support: dict[str, int]
    # Whether the model's served review threshold reached its precision target on its own held-out
    # split (metrics.json's review_threshold.reached); None when the model does not say.
    review_calibrated: bool | None = None
    # The classes the model can predict (labels.json); None when not recorded.
    classes: list[str] | None = None


def review_calibrated(model_dir: Path) -> bool | None:
    """metrics.json's ``review_threshold.reached`` of the model in ``model_dir``; None if not recorded."""
    try:
        metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    reached = (metrics.get("review_threshold") or {}).get("reached") if isinstance(metrics, dict) else None
    return reached if isinstance(reached, bool) else None


def score_model(model_dir: Path, docs: Sequence[HeldOutDoc], batch_size: int = 32) -> Scores:
    """Accuracy, macro-F1 and per-class recall of the model in ``model_dir`` on ``docs``, through the
    serving runtime. Averaged over the classes present in ``docs``: both models of a comparison are
    scored over the same classes even if one of them knows more."""
    from docflow.domain.classifier import TextClassifier

    classifier = TextClassifier(model_dir)
    y_true = [doc.label for doc in docs]
    probabilities = classifier.predict_proba([doc.text for doc in docs], batch_size=batch_size)
    # Its classes as the held-out labels are named (canonical_class): a champion trained on folders spelled
    # otherwise ("scientific report") is still scored on what it predicts.
    labels = [canonical_class(label) for label in classifier.labels]
    y_pred = [labels[i] for i in np.argmax(probabilities, axis=1)] if len(docs) else []
    # numpy, not scikit-learn: the gate also runs in a Lambda whose layers have no room for scikit-learn.
    metrics = class_metrics(y_true, y_pred, sorted(set(y_true)))
    return Scores(
        n_docs=len(docs),
        accuracy=metrics.accuracy,
        macro_f1=metrics.macro_f1,
        recall={label: s.recall for label, s in metrics.per_class.items()},
        support={label: s.support for label, s in metrics.per_class.items()},
        review_calibrated=review_calibrated(model_dir),
        classes=labels,
    )


def per_class_recall_f1(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> tuple[list[float], list[float]]:
    """Recall and F1 of each of ``labels``, 0 where undefined (scikit-learn's ``recall_score`` /
    ``f1_score(average=None, zero_division=0)``): ``docflow.domain.class_metrics``'s, as two lists."""
    per_class = class_metrics(y_true, y_pred, labels).per_class.values()
    return [s.recall for s in per_class], [s.f1 for s in per_class]


def decide(challenger: Scores, champion: Scores, policy: GatePolicy) -> tuple[bool, list[str]]:
    """(promote?, the reasons it may not be promoted). Pure: same numbers, same answer."""
    reasons: list[str] = []
    if challenger.classes is not None and champion.classes is not None:
        lost = sorted(set(champion.classes) - set(challenger.classes))
        if lost:  # the held-out documents may hold none of them: recall alone would not see it
            reasons.append(f"it cannot predict {', '.join(lost)}, which the champion can (its corpus lacks them)")
    gain = challenger.macro_f1 - champion.macro_f1
    if not gain > policy.min_macro_f1_gain:
        reasons.append(
            f"macro-F1 {challenger.macro_f1:.4f} does not beat the champion's {champion.macro_f1:.4f} "
            f"by more than {policy.min_macro_f1_gain:+.4f} (gain {gain:+.4f})"
        )
    for label in sorted(set(champion.recall) | set(challenger.recall)):
        before, after = champion.recall.get(label, 0.0), challenger.recall.get(label, 0.0)
        if before - after > policy.max_recall_drop + 1e-12:
            reasons.append(
                f"recall of {label} drops {before - after:.3f} ({before:.3f} -> {after:.3f}; "
                f"allowed {policy.max_recall_drop:.3f})"
            )
    if challenger.review_calibrated is False and champion.review_calibrated is True:
        reasons.append(
            "its review threshold does not reach its precision target on its held-out split (the "
            "champion's does): it would be served with the strictest threshold, most documents to review"
        )
    return not reasons, reasons


@dataclass
class GateDecision:
    version: int
    promoted: bool
    summary: str
    reasons: list[str] = field(default_factory=list)
    champion_version: int | None = None
    challenger_scores: Scores | None = None
    champion_scores: Scores | None = None
    n_eval: int = 0
    n_excluded: int = 0
    policy: GatePolicy = field(default_factory=GatePolicy)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["policy"] = self.policy.model_dump()
        return out

    def tags(self) -> dict[str, str]:
        tags = {
            "gate.decision": "promoted" if self.promoted else "refused",
            "gate.summary": self.summary,
            "gate.reasons": "; ".join(self.reasons) or "-",
            "gate.champion_version": str(self.champion_version or "-"),
            "gate.eval_docs": str(self.n_eval),
            "gate.excluded_docs": str(self.n_excluded),
            "gate.policy": json.dumps(self.policy.model_dump(), sort_keys=True),
            "gate.evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for role, scores in (("challenger", self.challenger_scores), ("champion", self.champion_scores)):
            if scores is not None:
                tags[f"gate.{role}_macro_f1"] = f"{scores.macro_f1:.4f}"
                tags[f"gate.{role}_accuracy"] = f"{scores.accuracy:.4f}"
                tags[f"gate.{role}_recall"] = json.dumps({k: round(v, 4) for k, v in scores.recall.items()})
                tags[f"gate.{role}_review_calibrated"] = str(scores.review_calibrated).lower()
        if self.challenger_scores and self.champion_scores:
            tags["gate.macro_f1_gain"] = f"{self.challenger_scores.macro_f1 - self.champion_scores.macro_f1:+.4f}"
            drops = {
                label: self.champion_scores.recall.get(label, 0.0) - self.challenger_scores.recall.get(label, 0.0)
                for label in set(self.champion_scores.recall) | set(self.challenger_scores.recall)
            }
            worst = max(sorted(drops), key=lambda label: drops[label])
            tags["gate.worst_recall_drop"] = f"{drops[worst]:+.4f}"
            tags["gate.worst_recall_drop_class"] = worst
        return {k: v[:5000] for k, v in tags.items()}


def read_train_manifest(path: Path) -> set[str]:
    """The text sha256s ``write_train_manifest`` recorded."""
    return set(json.loads(path.read_text(encoding="utf-8"))["text_sha256"])


def compare_on_holdout(
    version: int,
    challenger_dir: Callable[[], Path],
    champion_version: int,
    champion_dir: Callable[[], Path],
    holdout: Sequence[HeldOutDoc],
    champion_trained_on: set[str] | None,
    policy: GatePolicy,
) -> GateDecision:
    """The gate's comparison, wherever the two models come from (the MLflow registry here; the model
    bucket in the AWS training loop): both scored on the challenger's held-out documents minus those
    the champion trained on (``champion_trained_on``: text sha256s; None when not recorded: nothing is
    left out). The model directories are fetched only when there is something to score them on."""
    if champion_trained_on is None:
        logger.warning("champion v%d has no training manifest: nothing excluded", champion_version)
    seen = champion_trained_on or set()
    # A page with no text tells nothing of what the champion memorised (every blank page has the same hash,
    # and training corpora have some): it is never left out, so the gate counts what a blank scan becomes.
    shared = [doc for doc in holdout if doc.sha256 not in seen or not doc.text.strip()]
    n_excluded = len(holdout) - len(shared)
    if len(shared) < policy.min_eval_docs:
        return GateDecision(
            version,
            False,
            f"refused: {len(shared)} held-out documents the champion did not train on "
            f"(of {len(holdout)}; at least {policy.min_eval_docs} needed)",
            reasons=["too few shared held-out documents to compare"],
            champion_version=champion_version,
            n_eval=len(shared),
            n_excluded=n_excluded,
            policy=policy,
        )
    challenger_scores = score_model(challenger_dir(), shared)
    champion_scores = score_model(champion_dir(), shared)
    promote, reasons = decide(challenger_scores, champion_scores, policy)
    gain = challenger_scores.macro_f1 - champion_scores.macro_f1
    summary = (
        f"{'promoted' if promote else 'refused'}: macro-F1 {challenger_scores.macro_f1:.4f} vs champion "
        f"v{champion_version} {champion_scores.macro_f1:.4f} ({gain:+.4f}) on {len(shared)} held-out documents"
        + (f" ({n_excluded} the champion trained on left out)" if n_excluded else "")
    )
    return GateDecision(
        version,
        promote,
        summary,
        reasons=reasons,
        champion_version=champion_version,
        challenger_scores=challenger_scores,
        champion_scores=champion_scores,
        n_eval=len(shared),
        n_excluded=n_excluded,
        policy=policy,
    )


@dataclass(frozen=True)
class VersionRow:
    version: int
    aliases: list[str]
    created_at: datetime
    run_id: str | None
    gate_decision: str | None
    gate_reasons: str | None
    holdout_macro_f1: float | None
    content_version: str | None


class Registry:
    """The registered model ``name`` on the tracking server ``tracking`` points at."""

    def __init__(self, tracking: Tracking, name: str = REGISTERED_MODEL) -> None:
        self.tracking = tracking
        self.name = name
        self.client, self.experiment_id = connect(tracking)

    # -- reading ---------------------------------------------------------------------------------

    def version(self, version: int) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            raise RegistryError(f"{self.name} has no version {version}") from exc

    def alias(self, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None  # no such alias, or no such registered model yet

    def champion(self) -> ModelVersion | None:
        return self.alias(CHAMPION)

    def versions(self) -> list[VersionRow]:
        from mlflow.exceptions import MlflowException

        try:
            # search_model_versions leaves ModelVersion.aliases empty; the registered model has them all.
            by_alias = self.client.get_registered_model(self.name).aliases or {}
        except MlflowException:
            return []
        aliases: dict[int, list[str]] = {}
        for alias, alias_version in by_alias.items():
            aliases.setdefault(int(alias_version), []).append(alias)
        rows = []
        for mv in self.client.search_model_versions(f"name = '{self.name}'"):
            macro_f1 = None
            if mv.run_id:
                try:
                    macro_f1 = self.client.get_run(mv.run_id).data.metrics.get("holdout_macro_f1")
                except Exception:  # a run deleted by hand leaves the version behind
                    macro_f1 = None
            rows.append(
                VersionRow(
                    version=int(mv.version),
                    aliases=sorted(aliases.get(int(mv.version), [])),
                    created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
                    run_id=mv.run_id,
                    gate_decision=mv.tags.get("gate.decision"),
                    gate_reasons=mv.tags.get("gate.reasons"),
                    holdout_macro_f1=macro_f1,
                    content_version=mv.tags.get("content_version"),
                )
            )
        return sorted(rows, key=lambda row: row.version, reverse=True)

    def download_model_dir(self, version: int, dst: Path) -> Path:
        """The version's files as a TextClassifier-loadable directory ``dst`` (model.onnx at the root
        of the logged model, the rest from its extra_files)."""
        import shutil

        import mlflow.artifacts

        self.version(version)  # a clear error for a missing version
        with tempfile.TemporaryDirectory(prefix="docflow-registry-") as tmp:
            raw = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.name}/{version}", dst_path=tmp, tracking_uri=self.tracking.uri
                )
            )
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(raw / "model.onnx", dst / "model.onnx")
            for extra in sorted((raw / "extra_files").glob("*")):
                if extra.name in MODEL_FILES:
                    shutil.copy2(extra, dst / extra.name)
        return dst

    def _run_artifact(self, run_id: str, name: str, dst: Path) -> Path | None:
        try:
            return Path(self.client.download_artifacts(run_id, f"{GATE_ARTIFACTS}/{name}", str(dst)))
        except Exception as exc:  # absent (a version logged by something else): the caller decides
            logger.warning("run %s has no %s/%s: %s", run_id, GATE_ARTIFACTS, name, exc)
            return None

    # -- deciding --------------------------------------------------------------------------------

    def gate(self, version: int, policy: GatePolicy | None = None, move_alias: bool = True) -> GateDecision:
        """Make ``version`` the challenger, compare it with the champion, record the decision as tags,
        and promote it if it passes (or if there is no champion yet). ``move_alias=False``: decide only;
        the caller publishes the files first, then calls ``make_champion``."""
        policy = policy or GatePolicy()
        candidate = self.version(version)
        self.client.set_registered_model_alias(self.name, CHALLENGER, str(version))
        champion = self.champion()
        if champion is None:
            decision = GateDecision(version, True, "no champion yet: the first model is promoted", policy=policy)
        elif int(champion.version) == version:
            decision = GateDecision(version, False, "already the champion", champion_version=version, policy=policy)
        else:
            decision = self._compare(candidate, champion, policy)
        for key, value in decision.tags().items():
            self.client.set_model_version_tag(self.name, str(version), key, value)
        if candidate.run_id:
            self.client.set_tag(candidate.run_id, "gate.decision", decision.tags()["gate.decision"])
        if decision.promoted and move_alias:
            self._set_champion(version, reason="gate")
        logger.info(
            "gate: %s v%d %s — %s%s",
            self.name,
            version,
            "PROMOTED" if decision.promoted else "REFUSED",
            decision.summary,
            "".join(f"\n  - {r}" for r in decision.reasons),
        )
        return decision

    def _compare(self, candidate: ModelVersion, champion: ModelVersion, policy: GatePolicy) -> GateDecision:
        version, champion_version = int(candidate.version), int(champion.version)
        with tempfile.TemporaryDirectory(prefix="docflow-gate-") as tmp:
            work = Path(tmp)
            holdout_path = (
                self._run_artifact(candidate.run_id, HOLDOUT_FILE, work / "challenger") if candidate.run_id else None
            )
            if holdout_path is None:
                return GateDecision(
                    version,
                    False,
                    "refused: the challenger's run has no held-out set to compare on",
                    reasons=["no held-out set recorded with the challenger's run"],
                    champion_version=champion_version,
                    policy=policy,
                )
            manifest = (
                self._run_artifact(champion.run_id, TRAIN_MANIFEST_FILE, work / "champion") if champion.run_id else None
            )
            return compare_on_holdout(
                version,
                lambda: self.download_model_dir(version, work / "challenger-model"),
                champion_version,
                lambda: self.download_model_dir(champion_version, work / "champion-model"),
                read_holdout(holdout_path),
                read_train_manifest(manifest) if manifest is not None else None,
                policy,
            )

    # -- changing the champion -------------------------------------------------------------------

    def _set_champion(self, version: int, reason: str) -> int | None:
        previous = self.champion()
        previous_version = int(previous.version) if previous is not None else None
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.client.set_model_version_tag(self.name, str(version), "champion.since", now)
        self.client.set_model_version_tag(self.name, str(version), "champion.reason", reason)
        if previous_version is not None and previous_version != version:
            self.client.set_model_version_tag(self.name, str(version), "champion.previous", str(previous_version))
        return previous_version

    def make_champion(self, version: int, reason: str = "gate") -> int | None:
        """Give ``version`` the champion alias (the gate's decision, once its files are published); returns
        the previous champion's version. Idempotent: a retried job calling it again changes nothing."""
        current = self.champion()
        if current is not None and int(current.version) == version:
            return None
        return self._set_champion(version, reason)

    def promote(self, version: int, reason: str = "manual") -> int | None:
        """Make ``version`` the champion without the gate (an operator's decision); returns the
        previous champion's version."""
        self.version(version)
        previous = self._set_champion(version, reason)
        logger.info("%s v%d is the champion (%s; was v%s)", self.name, version, reason, previous)
        return previous

    def rollback_plan(self) -> tuple[int, int]:
        """(the champion, the version a rollback would give the alias back to), changing nothing."""
        current = self.champion()
        if current is None:
            raise RegistryError(f"{self.name} has no champion to roll back")
        previous = current.tags.get("champion.previous")
        if not previous:
            raise RegistryError(f"{self.name} v{current.version} replaced no earlier champion: nothing to roll back to")
        return int(current.version), int(previous)

    def rollback(self) -> tuple[int, int]:
        """Give the champion alias back to the version it replaced; returns (from, to)."""
        current, previous = self.rollback_plan()
        self.client.set_registered_model_alias(self.name, CHAMPION, str(previous))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.client.set_model_version_tag(self.name, str(current), "champion.rolled_back_at", now)
        self.client.set_model_version_tag(self.name, str(previous), "champion.since", now)
        self.client.set_model_version_tag(self.name, str(previous), "champion.reason", f"rollback from v{current}")
        logger.info("%s: champion rolled back from v%s to v%s", self.name, current, previous)
        return current, previous
