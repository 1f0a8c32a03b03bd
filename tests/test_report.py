"""The report of a model: which way round the confusion matrix is, and what report.json holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.app.report import class_names_for, make_report, write_report
from portanet.app.run_data import HeldOut

# Inputs the model below sends to a known class: [10, 0] -> 0, [0, 10] -> 1, [0, 0] -> 2.
TO_CLASS = {0: [10.0, 0.0], 1: [0.0, 10.0], 2: [0.0, 0.0]}
PAIRS = [(0, 1), (0, 1), (2, 0), (1, 1), (2, 2)]  # (true, predicted)


def known_model(backend: pn.Backend | str = "numpy") -> pn.Sequential:
    model = pn.Sequential([pn.Dense(2, 3)], backend=backend)
    model.load_state_dict({"0.W": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
                           "0.b": np.array([0.0, 0.0, 0.5])})
    return model


def held_out(model: pn.Sequential, names=("a", "b", "c")) -> HeldOut:
    X = np.array([TO_CLASS[p] for _, p in PAIRS], dtype=np.float32)
    y = np.array([t for t, _ in PAIRS], dtype=np.int64)
    images = np.zeros((len(PAIRS), 28, 28), dtype=np.uint8)
    return HeldOut(model.backend.asarray(X), model.backend.asarray(y), images, names)


def test_rows_are_true_classes_and_columns_predictions(backend: pn.Backend) -> None:
    model = known_model(backend)
    report = make_report(model, held_out(model))
    assert report["confusion_matrix"] == [[0, 2, 0], [0, 1, 0], [1, 0, 1]]
    assert report["class_names"] == ["a", "b", "c"]
    recall = {c["class"]: c["recall"] for c in report["per_class"]}
    precision = {c["class"]: c["precision"] for c in report["per_class"]}
    assert recall == pytest.approx({"a": 0.0, "b": 1.0, "c": 0.5})
    assert precision == pytest.approx({"a": 0.0, "b": 1 / 3, "c": 1.0})
    assert report["accuracy"] == pytest.approx(2 / 5)


def test_report_json_holds_the_same_report(tmp_path: Path) -> None:
    model = known_model()
    test = held_out(model)
    report = make_report(model, test)
    written, no_pictures = write_report(tmp_path, model, report, test,
                                        config={"command": "test"}, timings={"seconds": 1.0})
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["report"] == report
    assert document["config"] == {"command": "test"}
    assert document["environment"]["backend"] == "numpy"
    assert written[0] == tmp_path / "report.json"
    if no_pictures is None:
        assert {p.name for p in written} == {"report.json", "confusion_matrix.png",
                                             "misclassified.png"}


def test_class_names_follow_the_model() -> None:
    model = known_model()
    assert class_names_for(model, ["x"]) == ["x", "1", "2"]  # numbered beyond the named ones
    with pytest.raises(ValueError, match="the data has 4 classes but the model predicts only 3"):
        class_names_for(model, list("abcd"))
