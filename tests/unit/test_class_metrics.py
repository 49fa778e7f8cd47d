"""docflow.domain.class_metrics: the one per-class precision / recall / F1 / support computation behind
`docflow eval`, training's metrics.json, the promotion gate and the scan head's summary."""

from __future__ import annotations

import random

import pytest

from docflow.domain.class_metrics import ClassScore, class_metrics

pytestmark = pytest.mark.unit

# memo: 2 of 3 found, 4 predictions; email: 3 of 4 found, 4 predictions; letter: 2 true, never predicted;
# form: predicted once, no true example; invoice: a true label the model lacks; None: no prediction.
Y_TRUE = ["memo", "memo", "memo", "email", "email", "email", "email", "letter", "letter", "invoice"]
Y_PRED = ["memo", "memo", "email", "email", "email", "email", "memo", "memo", None, "form"]
MODEL_LABELS = ["memo", "letter", "form", "email"]


def test_per_class_counts_and_ratios_by_hand() -> None:
    m = class_metrics(Y_TRUE, Y_PRED, MODEL_LABELS)
    assert m.per_class["memo"] == ClassScore(precision=2 / 4, recall=2 / 3, f1=4 / 7, support=3, predicted=4)
    assert m.per_class["email"] == ClassScore(precision=3 / 4, recall=3 / 4, f1=3 / 4, support=4, predicted=4)
    assert m.accuracy == 5 / 10  # a true label outside the labels still counts, as a miss
    assert m.macro_f1 == pytest.approx((4 / 7 + 0 + 0 + 3 / 4) / 4)  # 37/112
    assert m.weighted_f1 == pytest.approx((4 / 7 * 3 + 3 / 4 * 4) / 9)  # 11/21


def test_a_class_never_predicted_scores_zero_without_dividing_by_zero() -> None:
    letter = class_metrics(Y_TRUE, Y_PRED, MODEL_LABELS).per_class["letter"]
    assert letter == ClassScore(precision=0.0, recall=0.0, f1=0.0, support=2, predicted=0)


def test_a_class_with_no_true_example_is_scored_and_counts_in_the_macro_mean() -> None:
    m = class_metrics(Y_TRUE, Y_PRED, MODEL_LABELS)
    assert m.per_class["form"] == ClassScore(precision=0.0, recall=0.0, f1=0.0, support=0, predicted=1)
    without = class_metrics(Y_TRUE, Y_PRED, ["memo", "letter", "email"])
    assert without.macro_f1 == pytest.approx((4 / 7 + 3 / 4) / 3) != m.macro_f1
    # Neither predicted nor true: still a row, all zero.
    assert class_metrics(Y_TRUE, Y_PRED, ["note"]).per_class["note"] == ClassScore(0.0, 0.0, 0.0, 0, 0)


def test_labels_are_scored_in_the_order_given_and_only_those() -> None:
    m = class_metrics(Y_TRUE, Y_PRED, MODEL_LABELS)
    assert list(m.per_class) == ["memo", "letter", "form", "email"]
    assert list(class_metrics(Y_TRUE, Y_PRED, sorted(MODEL_LABELS)).per_class) == ["email", "form", "letter", "memo"]
    assert "invoice" not in m.per_class  # a true label not asked for: no row, no precision hit for anyone
    # The order changes no per-class figure.
    reordered = class_metrics(Y_TRUE, Y_PRED, list(reversed(MODEL_LABELS)))
    assert reordered.per_class == m.per_class and reordered.accuracy == m.accuracy


def test_the_same_numbers_the_three_former_copies_gave() -> None:
    """The values below are what the code before the merge printed for Y_TRUE / Y_PRED (full floats, as
    metrics.json and `docflow eval --json` carry them)."""
    # train.py's score_probabilities (scikit-learn precision_recall_fscore_support / f1_score, over the model's labels):
    train = class_metrics(Y_TRUE, [p or "" for p in Y_PRED], MODEL_LABELS)
    assert {label: (s.precision, s.recall, s.f1, s.support) for label, s in train.per_class.items()} == {
        "memo": (0.5, 0.6666666666666666, 0.5714285714285714, 3),
        "letter": (0.0, 0.0, 0.0, 2),
        "form": (0.0, 0.0, 0.0, 0),
        "email": (0.75, 0.75, 0.75, 4),
    }
    assert (train.accuracy, train.macro_f1, train.weighted_f1) == (0.5, 0.33035714285714285, 0.5238095238095238)
    # registry.py's score_model (numpy, over the classes present in the held-out documents):
    gate = class_metrics(Y_TRUE, [p or "" for p in Y_PRED], sorted(set(Y_TRUE)))
    assert {label: s.recall for label, s in gate.per_class.items()} == {
        "email": 0.75,
        "invoice": 0.0,
        "letter": 0.0,
        "memo": 0.6666666666666666,
    }
    assert {label: s.support for label, s in gate.per_class.items()} == {
        "email": 4,
        "invoice": 1,
        "letter": 2,
        "memo": 3,
    }
    assert (gate.accuracy, gate.macro_f1) == (0.5, 0.33035714285714285)
    # evaluation.py's per_class_stats / evaluate: F1 from the rounded precision and recall, a plain mean;
    # one bit off scikit-learn's for memo (4/7) and for the macro mean (37/112), as it always was.
    report = class_metrics(Y_TRUE, Y_PRED, sorted(set(Y_TRUE)), arithmetic="python")
    assert {label: (s.precision, s.recall, s.f1, s.support, s.predicted) for label, s in report.per_class.items()} == {
        "email": (0.75, 0.75, 0.75, 4, 4),
        "invoice": (0.0, 0.0, 0.0, 1, 0),
        "letter": (0.0, 0.0, 0.0, 2, 0),
        "memo": (0.5, 0.6666666666666666, 0.5714285714285715, 3, 4),
    }
    assert (report.accuracy, report.macro_f1) == (0.5, 0.3303571428571429)


def test_no_rows_and_no_labels_are_zero() -> None:
    assert class_metrics([], [], ["a"]).per_class["a"] == ClassScore(0.0, 0.0, 0.0, 0, 0)
    empty = class_metrics(["a"], ["a"], [])
    assert (empty.per_class, empty.accuracy, empty.macro_f1, empty.weighted_f1) == ({}, 1.0, 0.0, 0.0)
    none = class_metrics([], [], [])
    assert (none.accuracy, none.macro_f1) == (0.0, 0.0)


def test_mismatched_lengths_and_repeated_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        class_metrics(["a", "b"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        class_metrics(["a"], ["a"], ["a", "a"])


def test_default_arithmetic_is_scikit_learn_bit_for_bit() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    for _ in range(300):
        classes = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"][: rng.randint(1, 10)]
        n = rng.randint(1, 40)
        y_true = [rng.choice(classes) for _ in range(n)]
        y_pred = [rng.choice([*classes, "zz"]) for _ in range(n)]  # "zz": a class outside the labels
        labels = rng.sample(classes, len(classes))  # some may have no support; any order
        m = class_metrics(y_true, y_pred, labels)
        precision, recall, f1, support = metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0
        )
        assert [s.precision for s in m.per_class.values()] == [float(x) for x in precision]
        assert [s.recall for s in m.per_class.values()] == [float(x) for x in recall]
        assert [s.f1 for s in m.per_class.values()] == [float(x) for x in f1]
        assert [s.support for s in m.per_class.values()] == [int(x) for x in support]
        assert m.accuracy == float(metrics.accuracy_score(y_true, y_pred))
        for average, value in (("macro", m.macro_f1), ("weighted", m.weighted_f1)):
            assert value == float(metrics.f1_score(y_true, y_pred, labels=labels, average=average, zero_division=0))
