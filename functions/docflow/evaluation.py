"""End-to-end evaluation: labelled documents through the real pipeline, scored.

The scoring is pure functions over ``EvalRow`` (true label, predicted class, terminal status), so it
is unit-tested without OCR or a model; ``load_labelled`` reads a labelled folder or CSV and
``run_pipeline`` pushes the files through ``docflow.pipeline.embedded.process_paths`` exactly as
``docflow process`` does, on a throw-away DOCFLOW_HOME so runs never see each other's records.

How rows count:
- top-1 accuracy and macro-F1 are over *in-scope* rows (true label is one of the model's classes),
  whatever the status: a NEEDS_REVIEW row is scored by its top-1 class (what a reviewer is shown),
  a REJECTED / FAILED row has no prediction and counts as wrong;
- abstention: NEEDS_REVIEW rate, and accuracy on what was *not* abstained (CLASSIFIED rows) — the
  precision a user gets from the automatic path;
- out-of-scope rows (invoices, receipts: classes the model does not know) cannot be right; the
  report says how many of them were abstained on, and what the others were called.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from docflow.domain.class_metrics import ClassScore, class_metrics
from docflow.domain.class_names import canonical_class

logger = logging.getLogger(__name__)


NO_PREDICTION = "(none)"  # the confusion-matrix column for rejected / failed documents
ABSTAINED = "NEEDS_REVIEW"
CLASSIFIED = "CLASSIFIED"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pdf"}


@dataclass(frozen=True)
class EvalRow:
    label: str  # canonical true class
    predicted: str | None  # top-1 class, None when the pipeline produced no prediction
    status: str  # terminal status: CLASSIFIED, NEEDS_REVIEW, REJECTED, FAILED, DUPLICATE
    confidence: float | None = None
    source: str = ""


# A per-class row of the report: precision, recall, f1, support, predicted (docflow.domain.class_metrics).
ClassStats = ClassScore


@dataclass
class EvalReport:
    n: int
    n_in_scope: int
    labels: list[str]  # in-scope true classes, sorted: the rows of the confusion matrix
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassStats]
    status_counts: dict[str, int]
    abstention_rate: float  # NEEDS_REVIEW share of in-scope rows
    coverage: float  # CLASSIFIED share of in-scope rows
    accuracy_classified: float | None  # precision of the automatic path (in-scope CLASSIFIED rows)
    accuracy_abstained: float | None  # top-1 accuracy on the rows sent to review
    no_prediction: int  # in-scope rows with no prediction (rejected, failed)
    confusion_labels: list[str]  # columns: the rows' labels, then other predicted classes, then (none)
    confusion: list[list[int]]
    out_of_scope: dict[str, Any] = field(default_factory=dict)
    review_threshold: float | None = None  # the confidence below which a document went to review
    # For a model with a scan head: the threshold its scans were reviewed at, and how many of these documents
    # the head was fitted on (figures on those are in-sample; bench/quality.py cross-validates).
    scan_head: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def confusion_matrix(rows: Sequence[EvalRow], labels: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """Counts [true label][predicted column]. Columns are ``labels``, then any other predicted class
    (sorted), then ``(none)`` if some row has no prediction; rows whose label is not in ``labels``
    are skipped."""
    row_labels = list(labels)
    wanted = set(row_labels)
    kept = [r for r in rows if r.label in wanted]
    extra = sorted({r.predicted for r in kept if r.predicted is not None and r.predicted not in wanted})
    columns = row_labels + extra + ([NO_PREDICTION] if any(r.predicted is None for r in kept) else [])
    index = {name: i for i, name in enumerate(columns)}
    matrix = [[0] * len(columns) for _ in row_labels]
    for r in kept:
        matrix[row_labels.index(r.label)][index[r.predicted if r.predicted is not None else NO_PREDICTION]] += 1
    return columns, matrix


def evaluate(
    rows: Sequence[EvalRow], model_labels: Iterable[str] | None = None, review_threshold: float | None = None
) -> EvalReport:
    """Score ``rows``. ``model_labels``: the classes the model can predict; rows with another true
    label are out of scope (reported apart). None: every row is in scope. ``review_threshold`` is
    only reported."""
    known = set(model_labels) if model_labels is not None else None
    in_scope = [r for r in rows if known is None or r.label in known]
    outside = [r for r in rows if known is not None and r.label not in known]
    labels = sorted({r.label for r in in_scope})
    # Precision / recall / F1 per class over the in-scope rows: a prediction of a class counts against its
    # precision whatever the row's true label; a row with no prediction is a miss. "python": this report's
    # arithmetic since its first version (F1 from the rounded precision and recall, macro-F1 a plain mean).
    scores = class_metrics([r.label for r in in_scope], [r.predicted for r in in_scope], labels, arithmetic="python")
    classified = [r for r in in_scope if r.status == CLASSIFIED]
    abstained = [r for r in in_scope if r.status == ABSTAINED]
    columns, matrix = confusion_matrix(in_scope, labels)
    out_of_scope: dict[str, Any] = {}
    if outside:
        out_of_scope = {
            "n": len(outside),
            "labels": dict(sorted(Counter(r.label for r in outside).items())),
            "abstained": sum(1 for r in outside if r.status == ABSTAINED),
            "abstention_rate": _safe_div(sum(1 for r in outside if r.status == ABSTAINED), len(outside)),
            "classified_as": dict(
                sorted(Counter(r.predicted for r in outside if r.status == CLASSIFIED and r.predicted).items())
            ),
            "statuses": dict(sorted(Counter(r.status for r in outside).items())),
        }
    return EvalReport(
        n=len(rows),
        n_in_scope=len(in_scope),
        labels=labels,
        accuracy=scores.accuracy,
        macro_f1=scores.macro_f1,
        per_class=scores.per_class,
        status_counts=dict(sorted(Counter(r.status for r in rows).items())),
        abstention_rate=_safe_div(len(abstained), len(in_scope)),
        coverage=_safe_div(len(classified), len(in_scope)),
        accuracy_classified=_safe_div(sum(r.predicted == r.label for r in classified), len(classified))
        if classified
        else None,
        accuracy_abstained=_safe_div(sum(r.predicted == r.label for r in abstained), len(abstained))
        if abstained
        else None,
        no_prediction=sum(1 for r in in_scope if r.predicted is None),
        confusion_labels=columns,
        confusion=matrix,
        out_of_scope=out_of_scope,
        review_threshold=review_threshold,
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _short_names(names: Sequence[str], width: int = 8) -> list[str]:
    """Column headers of at most ``width`` characters that stay distinct ("sci_publ", "sci_repo")."""
    short = []
    for name in names:
        parts = name.split("_")
        short.append(name[:width] if len(parts) == 1 else f"{parts[0][:3]}_{'_'.join(parts[1:])}"[:width])
    if len(set(short)) < len(short):
        return [f"c{i}" for i in range(len(names))]
    return short


def _scan_head_lines(head: dict[str, Any]) -> list[str]:
    lines = [f"scan head: pages read by OCR are reviewed below {head['review_threshold']:.2f}"]
    if head.get("in_sample"):
        lines.append(
            f"IN-SAMPLE: the model's scan head was fitted on {head['in_sample']} of these documents; figures on "
            "them overstate what new scans get (bench/quality.py reports them cross-validated)"
        )
    return lines


def format_report(report: EvalReport) -> str:
    """The report as plain text: summary, per-class table, abstention, confusion matrix."""
    lines = [
        f"documents: {report.n} ({report.n_in_scope} in the model's classes)",
        f"top-1 accuracy: {_pct(report.accuracy)}   macro-F1: {report.macro_f1:.3f}",
        f"needs review: {_pct(report.abstention_rate)}"
        + ("" if report.review_threshold is None else f" (confidence below {report.review_threshold:.2f})")
        + f"   auto-classified: {_pct(report.coverage)}   "
        f"accuracy when classified: {_pct(report.accuracy_classified)}   "
        f"accuracy of those sent to review: {_pct(report.accuracy_abstained)}",
        *(_scan_head_lines(report.scan_head) if report.scan_head else []),
        "statuses: " + ", ".join(f"{k} {v}" for k, v in report.status_counts.items()),
    ]
    if report.no_prediction:
        lines.append(f"no prediction (rejected/failed): {report.no_prediction}")
    if report.per_class:
        width = max(len("class"), *(len(label) for label in report.per_class))
        lines += ["", f"{'class':<{width}}  precision  recall     f1  support  predicted"]
        for label, s in report.per_class.items():
            lines.append(
                f"{label:<{width}}  {s.precision:9.3f}  {s.recall:6.3f}  {s.f1:5.3f}  {s.support:7d}  {s.predicted:9d}"
            )
    if report.confusion:
        short = _short_names(report.confusion_labels)
        width = max(len(label) for label in report.labels)
        cell = max(4, *(len(s) for s in short))
        lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
        lines.append(" " * width + "  " + " ".join(f"{s:>{cell}}" for s in short))
        for label, counts in zip(report.labels, report.confusion, strict=True):
            lines.append(f"{label:<{width}}  " + " ".join(f"{n:>{cell}}" for n in counts))
    if report.out_of_scope:
        o = report.out_of_scope
        lines += [
            "",
            f"out of scope (classes the model does not know): {o['n']} {o['labels']}",
            f"  sent to review: {o['abstained']} ({_pct(o['abstention_rate'])}); "
            f"auto-classified as: {o['classified_as'] or '-'}",
        ]
    return "\n".join(lines)


def plot_confusion(report: EvalReport, path: Path) -> Path:
    """A confusion-matrix picture (PNG) drawn with Pillow: cells shaded by row-normalized count."""
    # Imported here: only the picture needs Pillow; the scoring above is pure.
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    cell, left, top = 44, 12 + 7 * max((len(x) for x in report.labels), default=4), 160
    n_rows, n_cols = len(report.labels), len(report.confusion_labels)
    # 90 px on the right: room for the slanted column names
    image = Image.new("RGB", (left + cell * n_cols + 90, top + cell * n_rows + 40), "white")
    draw = ImageDraw.Draw(image)
    title = f"accuracy: {_pct(report.accuracy)},  macro-F1: {report.macro_f1:.3f}"
    draw.text((10, 8), title, fill="black", font=font)
    for j, name in enumerate(report.confusion_labels):
        label = Image.new("RGBA", (150, 14), (255, 255, 255, 0))  # the longest class name, whole
        ImageDraw.Draw(label).text((0, 0), name, fill="black", font=font)
        rotated = label.rotate(60, expand=True)
        image.paste(rotated, (left + j * cell + 8, top - rotated.height - 2), rotated)
    for i, (name, counts) in enumerate(zip(report.labels, report.confusion, strict=True)):
        y = top + i * cell
        draw.text((6, y + cell // 2 - 6), name, fill="black", font=font)
        total = max(1, sum(counts))
        for j, count in enumerate(counts):
            shade = int(255 * (1 - count / total))
            x = left + j * cell
            colour = (shade, shade, 255) if report.confusion_labels[j] == name else (255, shade, shade)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour if count else "white", outline="#ccc")
            if count:
                ink = "white" if count / total > 0.6 else "black"
                draw.text((x + cell // 2 - 6, y + cell // 2 - 6), str(count), fill=ink, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Inputs and the pipeline run (not pure: files and processes).


class EvalInputError(ValueError):
    """The labelled folder or CSV cannot be read."""


def load_labelled(path: Path) -> list[tuple[Path, str]]:
    """(file, canonical label) pairs from a folder with one sub-folder per class (files found
    recursively below it) or a CSV with ``path,label`` columns (paths relative to the CSV)."""
    path = Path(path)
    items: list[tuple[Path, str]] = []
    if path.is_dir():
        loose = sorted(p.name for p in path.iterdir() if not p.is_dir() and not p.name.startswith("."))
        if loose:
            shown = ", ".join(loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5 else "")
            logger.warning("%s: %d file(s) not in a class folder, left out: %s", path, len(loose), shown)
        for class_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for file in sorted(class_dir.rglob("*")):
                rel = file.relative_to(class_dir).parts
                if file.is_file() and not any(part.startswith(".") for part in rel):
                    items.append((file, canonical_class(class_dir.name)))
    elif path.is_file() and path.suffix.lower() == ".csv":
        items = _load_csv(path)
    else:
        raise EvalInputError(f"{path}: expected a folder of class folders or a .csv file")
    if not items:
        raise EvalInputError(f"{path}: no labelled files found")
    return items


def _load_csv(path: Path) -> list[tuple[Path, str]]:
    items: list[tuple[Path, str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a BOM from a spreadsheet is no header
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise EvalInputError(f"{path}: expected a header with 'path' and 'label' columns")
            for line, row in enumerate(reader, start=2):
                if not row["path"] or not row["label"]:
                    raise EvalInputError(f"{path}:{line}: empty path or label")
                file = (path.parent / row["path"]).resolve()
                if not file.is_file():
                    raise EvalInputError(f"{path}:{line}: no such file {file}")
                items.append((file, canonical_class(row["label"])))
    except UnicodeDecodeError as exc:
        raise EvalInputError(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise EvalInputError(f"{path}: not a readable CSV: {exc}") from None
    except OSError as exc:
        raise EvalInputError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return items


def rows_from_results(items: Sequence[tuple[Path, str]], results: Sequence[Any]) -> list[EvalRow]:
    """EvalRows from the pipeline's DocumentResults (same order as ``items``). A DUPLICATE row (the same
    bytes listed twice) takes the prediction of the document it duplicates."""
    by_id = {r.document_id: r for r in results if r.document_id and r.status != "DUPLICATE"}
    rows = []
    for (_, label), result in zip(items, results, strict=True):
        effective = result
        if result.status == "DUPLICATE" and result.document_id in by_id:
            effective = by_id[result.document_id]
        rows.append(
            EvalRow(
                label=label,
                predicted=effective.predicted_class,
                status=str(effective.status),
                confidence=effective.confidence,
                source=result.source,
            )
        )
    return rows


def run_pipeline(
    items: Sequence[tuple[Path, str]],
    workers: int,
    model_dir: Path | None = None,
    review_threshold: float | None = None,
    home: Path | None = None,
    on_result: Any = None,
) -> tuple[list[Any], list[str], float, dict[str, Any] | None]:
    """Process ``items`` as ``docflow process`` would, on a fresh temporary DOCFLOW_HOME (or ``home``).
    Returns (DocumentResults in input order, the model's class labels, the review threshold applied, and for
    a model with a scan head its threshold and how many of the documents it was fitted on).
    Raises ConfigurationError before the first document when the model does not load or an OCR
    language is missing."""
    # Imported here: only a run needs the pipeline; scoring and load_labelled (docflow_training.scans) do not.
    from docflow.pipeline.embedded import process_paths
    from docflow.pipeline.inputs import check_ready
    from docflow.settings import Settings

    with tempfile.TemporaryDirectory(prefix="docflow-eval-") as scratch:
        overrides: dict[str, Any] = {"home": home or Path(scratch)}
        if model_dir is not None:
            overrides["model_dir"] = model_dir
        if review_threshold is not None:
            overrides["review_threshold"] = review_threshold
        settings = Settings(**overrides)
        model = check_ready(settings)
        files = [(file, str(file)) for file, _ in items]
        results = process_paths(files, settings, workers=max(1, min(workers, len(files))), on_result=on_result)
    head = None
    if model.scan_head is not None:
        fitted = set((model.scan_head.spec.model_extra or {}).get("fitted_on", {}).get("documents", []))
        head = {
            "review_threshold": settings.review_threshold
            if settings.review_threshold is not None
            else model.scan_head.review_threshold,
            "in_sample": sum(1 for r in results if getattr(r, "document_id", None) in fitted),
        }
    return results, list(model.labels), model.review_threshold(settings.review_threshold), head
