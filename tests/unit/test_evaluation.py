"""The evaluation's scoring: pure functions over (label, prediction, status) rows."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from docflow.domain.class_names import canonical_class
from docflow.evaluation import (
    NO_PREDICTION,
    EvalInputError,
    EvalRow,
    confusion_matrix,
    evaluate,
    format_report,
    load_labelled,
    plot_confusion,
    rows_from_results,
)

pytestmark = pytest.mark.unit

MODEL_LABELS = ["email", "form", "letter", "memo"]
ROWS = [
    EvalRow("email", "email", "CLASSIFIED", 0.9),
    EvalRow("email", "email", "CLASSIFIED", 0.8),
    EvalRow("email", "memo", "NEEDS_REVIEW", 0.4),
    EvalRow("memo", "memo", "CLASSIFIED", 0.95),
    EvalRow("memo", "letter", "CLASSIFIED", 0.7),
    EvalRow("letter", "letter", "NEEDS_REVIEW", 0.45),
    EvalRow("letter", None, "REJECTED"),
    EvalRow("invoice", "form", "CLASSIFIED", 0.6),
    EvalRow("invoice", "letter", "NEEDS_REVIEW", 0.3),
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("news", "news_article"),
        ("report", "scientific_report"),
        ("Scientific", "scientific_publication"),
        ("scientific_report", "scientific_report"),
        ("News Article", "news_article"),
        ("E-mail", "email"),
        ("note", "note"),
        (" Memo ", "memo"),
        ("invoice", "invoice"),
    ],
)
def test_canonical_class(name: str, expected: str) -> None:
    assert canonical_class(name) == expected


def test_accuracy_counts_review_by_top1_and_missing_predictions_as_wrong() -> None:
    report = evaluate(ROWS, MODEL_LABELS)
    assert report.n == 9 and report.n_in_scope == 7
    assert report.labels == ["email", "letter", "memo"]
    # correct: email, email, memo, letter(review) = 4 of 7
    assert report.accuracy == pytest.approx(4 / 7)
    assert report.no_prediction == 1


def test_abstention_statistics() -> None:
    report = evaluate(ROWS, MODEL_LABELS)
    assert report.abstention_rate == pytest.approx(2 / 7)
    assert report.coverage == pytest.approx(4 / 7)
    assert report.accuracy_classified == pytest.approx(3 / 4)  # memo→letter is the one wrong
    assert report.accuracy_abstained == pytest.approx(1 / 2)
    assert report.status_counts == {"CLASSIFIED": 5, "NEEDS_REVIEW": 3, "REJECTED": 1}


def test_per_class_precision_recall_and_macro_f1() -> None:
    report = evaluate(ROWS, MODEL_LABELS)
    email, letter, memo = (report.per_class[c] for c in ("email", "letter", "memo"))
    assert (email.precision, email.recall, email.support) == (1.0, pytest.approx(2 / 3), 3)
    assert (letter.precision, letter.recall) == (pytest.approx(1 / 2), pytest.approx(1 / 2))
    assert (memo.precision, memo.recall) == (pytest.approx(1 / 2), pytest.approx(1 / 2))
    f1s = [2 * p * r / (p + r) for p, r in ((1, 2 / 3), (0.5, 0.5), (0.5, 0.5))]
    assert report.macro_f1 == pytest.approx(sum(f1s) / 3)


def test_per_class_figures_keep_the_reports_own_rounding() -> None:
    """F1 from the rounded precision and recall, macro-F1 a plain mean: the full floats `docflow eval --json`
    has always printed, one bit off scikit-learn's 4/7 and 37/112 here (docflow.domain.class_metrics)."""
    pairs = [("memo", "memo")] * 2 + [("memo", "email")] + [("email", "email")] * 3 + [("email", "memo")]
    pairs += [("letter", "memo"), ("letter", None), ("invoice", "form")]
    report = evaluate([EvalRow(t, p, "CLASSIFIED" if p else "REJECTED") for t, p in pairs])
    assert report.labels == ["email", "invoice", "letter", "memo"]
    memo = report.per_class["memo"]
    assert (memo.precision, memo.recall, memo.f1, memo.support, memo.predicted) == (
        0.5,
        0.6666666666666666,
        0.5714285714285715,
        3,
        4,
    )
    assert (report.accuracy, report.macro_f1) == (0.5, 0.3303571428571429)
    assert json.loads(json.dumps(report.to_dict()))["per_class"]["memo"]["f1"] == 0.5714285714285715


def test_out_of_scope_rows_are_reported_apart() -> None:
    report = evaluate(ROWS, MODEL_LABELS)
    assert report.out_of_scope["n"] == 2
    assert report.out_of_scope["abstained"] == 1
    assert report.out_of_scope["classified_as"] == {"form": 1}
    # Without the model's labels every row is in scope, and an invoice is simply a wrong answer.
    assert evaluate(ROWS).n_in_scope == 9


def test_confusion_matrix_rows_are_true_classes_and_sum_to_support() -> None:
    columns, matrix = confusion_matrix(ROWS, ["email", "letter", "memo"])
    assert columns == ["email", "letter", "memo", NO_PREDICTION]
    assert matrix == [[2, 0, 1, 0], [0, 1, 0, 1], [0, 1, 1, 0]]
    extra_columns, _ = confusion_matrix([EvalRow("memo", "note", "CLASSIFIED")], ["memo"])
    assert extra_columns == ["memo", "note"]


def test_perfect_and_empty() -> None:
    perfect = evaluate([EvalRow(c, c, "CLASSIFIED") for c in MODEL_LABELS], MODEL_LABELS)
    assert perfect.accuracy == perfect.macro_f1 == perfect.accuracy_classified == 1.0
    assert perfect.accuracy_abstained is None and perfect.abstention_rate == 0.0
    empty = evaluate([], MODEL_LABELS)
    assert empty.accuracy == 0.0 and empty.confusion == []


def test_report_text_and_json() -> None:
    report = evaluate(ROWS, MODEL_LABELS)
    text = format_report(report)
    assert "top-1 accuracy: 57.1%" in text
    assert "needs review: 28.6%" in text and "accuracy when classified: 75.0%" in text
    assert "confusion matrix" in text and "out of scope" in text
    assert json.loads(json.dumps(report.to_dict()))["per_class"]["email"]["support"] == 3


def test_plot_is_a_png(tmp_path: Path) -> None:
    out = plot_confusion(evaluate(ROWS, MODEL_LABELS), tmp_path / "cm.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_load_labelled_folder_and_csv(tmp_path: Path) -> None:
    for folder, name in [("news", "a.png"), ("Memo", "b.png"), ("Memo/sub", "c.png"), ("report", ".hidden")]:
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / folder / name).write_bytes(b"x")
    items = load_labelled(tmp_path / "data")
    assert [(p.name, label) for p, label in items] == [("b.png", "memo"), ("c.png", "memo"), ("a.png", "news_article")]
    csv_file = tmp_path / "data" / "labels.csv"
    csv_file.write_text("path,label\nnews/a.png,news\nMemo/b.png,memo\n")
    assert [(p.name, label) for p, label in load_labelled(csv_file)] == [("a.png", "news_article"), ("b.png", "memo")]
    csv_file.write_text("path,label\nnews/missing.png,news\n")
    with pytest.raises(EvalInputError, match="no such file"):
        load_labelled(csv_file)
    with pytest.raises(EvalInputError):
        load_labelled(tmp_path / "nothing-here")


def test_duplicates_take_the_originals_prediction() -> None:
    results = [
        SimpleNamespace(document_id="d1", status="CLASSIFIED", predicted_class="memo", confidence=0.9, source="a"),
        SimpleNamespace(document_id="d1", status="DUPLICATE", predicted_class=None, confidence=None, source="b"),
    ]
    rows = rows_from_results([(Path("a"), "memo"), (Path("b"), "memo")], results)
    assert [(r.predicted, r.status, r.source) for r in rows] == [
        ("memo", "CLASSIFIED", "a"),
        ("memo", "CLASSIFIED", "b"),
    ]


def test_files_outside_the_class_folders_are_named_not_silently_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "memo").mkdir()
    (tmp_path / "memo" / "a.png").write_bytes(b"x")
    (tmp_path / "stray.png").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    with caplog.at_level("WARNING"):
        items = load_labelled(tmp_path)
    assert items == [(tmp_path / "memo" / "a.png", "memo")]
    assert "1 file(s) not in a class folder, left out: stray.png" in caplog.text
