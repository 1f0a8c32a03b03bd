"""One vocabulary for argument checks: the same bad value gets the same message from a layer, an
optimizer, fit, a recipe and the command line."""

from __future__ import annotations

import numpy as np
import pytest

import portanet as pn
from portanet import number_checks as _checks
from portanet.app import cli, recipes
from tests.helpers import separable_data


def message(make) -> str:
    with pytest.raises(ValueError) as caught:
        make()
    return str(caught.value)


def cli_message(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(["train", *argv]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def tiny_model() -> pn.Sequential:
    return pn.Sequential([pn.Dense(4, 3)], backend="numpy", seed=0)


def test_a_rate_outside_zero_to_one_reads_the_same_everywhere(
        capsys: pytest.CaptureFixture[str]) -> None:
    rule = "must be in [0, 1), got 1.5"
    assert message(lambda: pn.Dropout(1.5)) == f"Dropout rate {rule}"
    assert message(lambda: pn.optim.SGD(momentum=1.5)) == f"momentum {rule}"
    assert message(lambda: recipes.get_recipe("best").replace(dropout=1.5)) == f"dropout {rule}"
    assert cli_message(capsys, "--dropout", "1.5").endswith(f"argument --dropout: {rule}")


def test_a_learning_rate_that_is_not_positive_reads_the_same_everywhere(
        capsys: pytest.CaptureFixture[str]) -> None:
    rule = "must be a finite number > 0, got -1.0"
    assert message(lambda: pn.optim.Adam(lr=-1.0)) == f"lr {rule}"
    assert message(lambda: recipes.get_recipe("best").replace(lr=-1.0)) == f"lr {rule}"
    assert cli_message(capsys, "--lr", "-1").endswith(f"argument --lr: {rule}")


def test_a_bool_is_not_a_count() -> None:
    X, y = separable_data(16, 4, 3)
    assert "positive integer, got True" in message(lambda: pn.Dense(True, 3))
    assert "positive integer, got True" in message(
        lambda: pn.fit(tiny_model(), X, y, batch_size=True))
    assert message(lambda: pn.fit(tiny_model(), X, y, epochs=False)) == (
        "epochs must be a non-negative integer, got False")
    assert "positive integer, got True" in message(
        lambda: pn.optim.OneCycle(pn.optim.SGD(), 0.1, total_steps=True))


@pytest.mark.parametrize("check, good, bad", [
    (_checks.positive_int, [1, np.int64(7)], [0, -1, 1.0, True, "3"]),
    (_checks.non_negative_int, [0, 5], [-1, 0.5, False]),
    (_checks.finite_positive, [1e-9, 3, "2.5"], [0, -1, float("inf"), float("nan"), None, True]),
    (_checks.finite_non_negative, [0, 0.5], [-1e-9, float("nan"), "x"]),
    (_checks.rate, [0, 0.999], [1, -0.1, float("nan")]),
    (_checks.open_unit, [0.5], [0, 1]),
])
def test_each_check_accepts_and_refuses(check, good, bad) -> None:
    for value in good:
        check("x", value)
    for value in bad:
        with pytest.raises(ValueError, match=r"^x must be "):
            check("x", value)
