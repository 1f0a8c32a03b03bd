import json

import numpy as np
import pytest

from portanet.app.metrics import classification_report, confusion_matrix, format_report

# A small 4-class example, worked out by hand. Class 3 is never predicted.
#   example: 0  1  2  3  4  5  6  7  8  9
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 0, 2, 1]
# Rows = true class, columns = predicted class:
#   true 0 -> predicted 0, 0, 1      -> [2, 1, 0, 0]
#   true 1 -> predicted 1, 2         -> [0, 1, 1, 0]
#   true 2 -> predicted 2, 2, 0      -> [1, 0, 2, 0]
#   true 3 -> predicted 2, 1         -> [0, 1, 1, 0]
HAND_CM = [
    [2, 1, 0, 0],
    [0, 1, 1, 0],
    [1, 0, 2, 0],
    [0, 1, 1, 0],
]
# TP (diagonal) = 2, 1, 2, 0; support (row sums) = 3, 2, 3, 2; predicted (column sums) =
# 3, 3, 4, 0. Accuracy = 5 / 10.
# precision = TP / predicted: 2/3, 1/3, 2/4, 0 (never predicted -> 0 by convention)
# recall    = TP / support:   2/3, 1/2, 2/3, 0
# f1 = 2 TP / (support + predicted): 4/6, 2/5, 4/7, 0
#   (check class 1: 2 * (1/3)(1/2) / (1/3 + 1/2) = (1/3) / (5/6) = 2/5)
HAND_PRECISION = [2 / 3, 1 / 3, 1 / 2, 0.0]
HAND_RECALL = [2 / 3, 1 / 2, 2 / 3, 0.0]
HAND_F1 = [2 / 3, 2 / 5, 4 / 7, 0.0]
HAND_SUPPORT = [3, 2, 3, 2]
# macro = plain mean over the 4 classes:
#   precision (2/3 + 1/3 + 1/2 + 0) / 4 = 3/8
#   recall    (2/3 + 1/2 + 2/3 + 0) / 4 = 11/24
#   f1        (70/105 + 42/105 + 60/105 + 0) / 4 = 43/105
# weighted = support-weighted mean (weights 3, 2, 3, 2 over 10):
#   precision (3*2/3 + 2*1/3 + 3*1/2) / 10 = (25/6) / 10 = 5/12
#   recall    (2 + 1 + 2) / 10 = 1/2 (always equals accuracy)
#   f1        (3*2/3 + 2*2/5 + 3*4/7) / 10 = 79/175
HAND_MACRO = {"precision": 3 / 8, "recall": 11 / 24, "f1": 43 / 105}
HAND_WEIGHTED = {"precision": 5 / 12, "recall": 1 / 2, "f1": 79 / 175}


def test_confusion_matrix_matches_hand_computation():
    cm = confusion_matrix(np.array(Y_TRUE), np.array(Y_PRED))
    assert cm.dtype == np.int64
    assert cm.tolist() == HAND_CM


def test_confusion_matrix_num_classes_pads_unseen_classes():
    cm = confusion_matrix([0, 1], [1, 1], num_classes=3)
    assert cm.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert confusion_matrix([], [], num_classes=2).tolist() == [[0, 0], [0, 0]]


def test_report_matches_hand_computation():
    rep = classification_report(Y_TRUE, Y_PRED, num_classes=4)
    assert rep["num_classes"] == 4 and rep["num_samples"] == 10
    assert rep["accuracy"] == pytest.approx(0.5)
    assert rep["confusion_matrix"] == HAND_CM
    per = rep["per_class"]
    assert [r["class"] for r in per] == ["0", "1", "2", "3"]
    assert [r["precision"] for r in per] == pytest.approx(HAND_PRECISION)
    assert [r["recall"] for r in per] == pytest.approx(HAND_RECALL)
    assert [r["f1"] for r in per] == pytest.approx(HAND_F1)
    assert [r["support"] for r in per] == HAND_SUPPORT
    for key, hand in (("macro_avg", HAND_MACRO), ("weighted_avg", HAND_WEIGHTED)):
        for metric, value in hand.items():
            assert rep[key][metric] == pytest.approx(value), (key, metric)
        assert rep[key]["support"] == 10


def test_class_never_predicted_has_zero_precision_not_nan():
    rep = classification_report(Y_TRUE, Y_PRED)
    never = rep["per_class"][3]
    assert never == {"class": "3", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # A class that is absent from both y_true and y_pred: all zeros, support 0.
    rep = classification_report([0, 1], [0, 1], num_classes=3)
    assert rep["per_class"][2] == {
        "class": "2",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    assert rep["macro_avg"]["precision"] == pytest.approx(2 / 3)


def test_report_is_json_serialisable_and_uses_class_names():
    names = ["zero", "one", "two", "three"]
    rep = classification_report(np.array(Y_TRUE, dtype=np.int32), Y_PRED, class_names=names)
    assert json.loads(json.dumps(rep)) == rep
    assert [r["class"] for r in rep["per_class"]] == names
    with pytest.raises(ValueError, match="class_names has 3 entries but there are 4 classes"):
        classification_report(Y_TRUE, Y_PRED, class_names=names[:3])


def test_format_report_is_aligned_and_complete():
    rep = classification_report(Y_TRUE, Y_PRED)
    text = format_report(rep)
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1", "support"]
    assert "0.6667" in lines[1] and lines[1].split()[-1] == "3"
    acc = next(ln for ln in lines if ln.strip().startswith("accuracy"))
    assert acc.split() == ["accuracy", "0.5000", "10"]
    assert any(ln.split()[:2] == ["macro", "avg"] for ln in lines)
    assert any(ln.split()[:2] == ["weighted", "avg"] for ln in lines)
    table = lines[: lines.index("")]
    assert len({len(ln) for ln in table}) == 1  # every table row is the same width
    start = next(i for i, ln in enumerate(lines) if ln.startswith("confusion matrix"))
    matrix = lines[start + 1 :]
    assert matrix[0].split() == ["|", "0", "1", "2", "3"]
    assert [ln.split("|")[1].split() for ln in matrix[2:]] == [
        [str(v) for v in row] for row in HAND_CM
    ]
    assert len({len(ln) for ln in matrix}) == 1


def test_format_report_ten_classes_with_long_names():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, size=2000)
    pred = np.where(rng.random(2000) < 0.9, y, rng.integers(0, 10, size=2000))
    names = [f"class-number-{i}" for i in range(10)]
    text = format_report(classification_report(y, pred, class_names=names))
    matrix = text.splitlines()[-12:]
    assert matrix[0].split()[1:] == [str(i) for i in range(10)]  # indices as column heads
    assert matrix[2].lstrip().startswith("0 class-number-0")
    assert max(len(ln) for ln in matrix) < 80


def test_format_report_rejects_other_dicts():
    with pytest.raises(ValueError, match="classification_report"):
        format_report({"accuracy": 1.0})


@pytest.mark.parametrize(
    ("y_true", "y_pred", "exc", "match"),
    [
        ([0, 1, 2], [0, 1], ValueError, r"same length, got 3 and 2"),
        ([0.0, 1.0], [0, 1], TypeError, r"y_true must hold integer.*float64.*astype\(int\)"),
        ([0, 1], np.array([[0.1, 0.9], [0.8, 0.2]]), ValueError, r"y_pred must be a 1-D.*argmax"),
        ([[0, 1]], [0, 1], ValueError, r"y_true must be a 1-D array.*shape \(1, 2\)"),
        ([True, False], [0, 1], TypeError, r"y_true must hold integer.*bool"),
        ([0, -1], [0, 1], ValueError, r"y_true has labels outside 0\.\.1 \(e\.g\. -1"),
        ([], [], ValueError, r"cannot infer the number of classes.*num_classes"),
    ],
)
def test_bad_inputs_give_clear_errors(y_true, y_pred, exc, match):
    with pytest.raises(exc, match=match):
        confusion_matrix(y_true, y_pred)


def test_out_of_range_labels_with_num_classes():
    with pytest.raises(
        ValueError, match=r"y_pred has labels outside 0\.\.2 \(e\.g\. 3, 2 in all\)"
    ):
        confusion_matrix([0, 1, 2, 0], [0, 3, 3, 1], num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        confusion_matrix([0], [0], num_classes=0)
    with pytest.raises(ValueError, match="zero samples"):
        classification_report([], [], num_classes=3)


def test_cross_check_against_scikit_learn():
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, size=500)
    pred = np.where(rng.random(500) < 0.6, y, rng.integers(0, 5, size=500))  # 5 never predicted
    labels = list(range(7))  # class 6 absent from both
    rep = classification_report(y, pred, num_classes=7)
    assert rep["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for average, key in (("macro", "macro_avg"), ("weighted", "weighted_avg")):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y, pred, labels=labels, average=average, zero_division=0
        )
        assert [rep[key]["precision"], rep[key]["recall"], rep[key]["f1"]] == pytest.approx(
            [p, r, f]
        )
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert [c["precision"] for c in rep["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in rep["per_class"]] == pytest.approx(r)
    assert [c["f1"] for c in rep["per_class"]] == pytest.approx(f)
    assert [c["support"] for c in rep["per_class"]] == s.tolist()
