"""Recipes and the one initializer grammar they share with Dense and the command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import portanet as pn
from portanet import init, optim
from portanet.app import recipes
from portanet.app.recipes import KEEP, PRESETS, Recipe, get_recipe, parse_batch_size, parse_hidden
from portanet.layers import Dense


def draw(text: str, shape: tuple[int, ...] = (400, 300)) -> np.ndarray:
    return init.get_initializer(text)(np.random.default_rng(0), shape)


def test_initializer_text_forms():
    assert np.std(draw("normal:0.5")) == pytest.approx(0.5, rel=0.02)
    assert np.mean(draw("normal:0.1,3")) == pytest.approx(3.0, abs=0.01)
    assert np.std(draw("normal")) == pytest.approx(0.01, rel=0.02)  # the factory's default
    low_high = draw("uniform:-0.5,0.25")
    assert low_high.min() >= -0.5 and low_high.max() < 0.25 and low_high.min() < -0.49
    assert np.std(draw("he")) == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert np.std(draw("kaiming")) == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert np.abs(draw("xavier")).max() <= np.sqrt(6 / 700)
    assert not draw("zeros").any()
    same = init.uniform(-1.0, 1.0)
    assert init.get_initializer(same) is same


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gaussian", "unknown initializer 'gaussian'; use he, glorot"),
        ("normal:x", "its arguments must be numbers"),
        ("uniform:-1,0,1", "wrong number of arguments"),
        ("he:2", "wrong number of arguments"),
        ("uniform:1,-1", "low < high"),
    ],
)
def test_bad_initializer_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        init.get_initializer(text)
    with pytest.raises(ValueError, match=message):
        Recipe(weight_init=text).check()


def test_dense_and_recipe_read_the_same_grammar():
    """A recipe's initializer strings reach Dense unchanged and draw what the grammar says."""
    model = Recipe(hidden=(7,), weight_init="uniform:-0.5,0.5", bias_init="normal:0.1,2").build(
        "numpy", seed=3, in_features=11, classes=4)
    by_hand = Dense(11, 7, "uniform:-0.5,0.5", "normal:0.1,2")
    for layer in (model.layers[0], by_hand):
        assert layer.out_features == 7
    W = model.backend.to_numpy(model.layers[0].params["W"])
    b = model.backend.to_numpy(model.layers[0].params["b"])
    assert np.abs(W).max() <= 0.5 and W.std() > 0.2
    assert b.mean() == pytest.approx(2.0, abs=0.1)


def test_replace_keeps_only_what_is_kept():
    best = get_recipe("best")
    assert best.replace(lr=KEEP, hidden=KEEP) == best
    assert best.replace(batch_size=None).batch_size is None  # None means full batch, no trick
    assert best.replace(lr=0.5, epochs=KEEP) == dataclasses.replace(best, lr=0.5)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        best.replace(lr=0.0)


def test_recipe_has_no_dead_fields():
    assert "extra" not in {f.name for f in dataclasses.fields(Recipe)}
    for preset in PRESETS.values():
        preset.check()


def test_parse_hidden_and_batch_size():
    assert parse_hidden("512, 256") == (512, 256)
    assert parse_hidden("") == ()
    assert parse_batch_size("full") is None and parse_batch_size("64") == 64
    with pytest.raises(ValueError, match="whole numbers like 512,256"):
        parse_hidden("12,x")
    with pytest.raises(ValueError, match="a whole number or 'full'"):
        parse_batch_size("many")


def test_recipes_build_every_optimizer_from_optims_registry(monkeypatch) -> None:
    best = recipes.get_recipe("best")
    for name in optim.OPTIMIZERS:
        built = best.replace(optimizer=name, lr=0.05, weight_decay=1e-4).make_optimizer()
        assert type(built) is type(optim.OPTIMIZERS[name]())
        assert (built.lr, built.weight_decay) == (0.05, 1e-4)
    assert best.replace(optimizer="nesterov").make_optimizer().nesterov
    assert best.replace(optimizer="momentum", momentum=0.5).make_optimizer().momentum == 0.5
    assert best.replace(optimizer="sgd").make_optimizer().momentum == 0.0

    class Mine(optim.SGD):
        pass

    monkeypatch.setitem(optim.OPTIMIZERS, "mine", Mine)  # one row: usable by name at once
    assert type(best.replace(optimizer="mine").make_optimizer()) is Mine
    assert type(optim.get_optimizer("mine")) is Mine


def test_relu_after_pooling_trains_exactly_like_relu_before_it() -> None:
    """The ``cnn`` preset pools before its ReLUs (a quarter of the values); the two orders
    compute the same outputs and gradients, so training ends on the same weights."""
    import portanet as pn

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(96, 1, 10, 10)).astype(np.float32), rng.integers(0, 3, 96)
    trained = []
    for pool_first in (False, True):
        block = [pn.MaxPool2D(2), pn.ReLU()] if pool_first else [pn.ReLU(), pn.MaxPool2D(2)]
        model = pn.Sequential([pn.Conv2D(1, 4, 3), pn.BatchNorm(4), *block, pn.Flatten(),
                               pn.Dense(64, 3)], backend="numpy", seed=0)
        pn.fit(model, x, y, optimizer=optim.Adam(1e-2), epochs=2, batch_size=32, threads=1)
        trained.append(model.state_dict())
    for key, value in trained[0].items():
        np.testing.assert_array_equal(trained[1][key], value, err_msg=key)


def test_old_preset_names_keep_working(capsys: pytest.CaptureFixture[str]) -> None:
    assert get_recipe("best") is PRESETS["mlp800"] and "best" not in PRESETS
    from portanet.app import cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--model", "best", "--help"])
    assert "best: the old name of mlp800" in " ".join(capsys.readouterr().out.split())
    assert cli.build_parser().parse_args(["train", "--model", "best"]).model == "best"


def test_cnn_best_recipe_builds_its_augmentation_and_averaging() -> None:
    from portanet.augment import RandomAffine
    from portanet.averaging import WeightAverage

    recipe = get_recipe("cnn-best")
    model = recipe.build("numpy", seed=0)
    arguments = recipe.fit_arguments(samples=1000, model=model)
    assert isinstance(arguments["augment"], RandomAffine)
    assert arguments["augment"].degrees == recipe.rotate
    assert arguments["augment"].translate == recipe.augment_pixels
    assert [type(cb) for cb in arguments["callbacks"]] == [WeightAverage]
    assert "callbacks" not in recipe.fit_arguments(samples=1000)  # no model: no average
    assert recipe.recalibrate and recipe.test_shift == 1
    with pytest.raises(ValueError, match="average"):
        recipe.replace(average=1.0)


def test_test_shift_keeps_the_networks_as_an_ensemble_of_views() -> None:
    recipe = get_recipe("cnn")
    models = [recipe.build("numpy", seed=seed) for seed in (0, 1)]
    assert recipe.keep(models[:1]) is models[0]
    assert recipe.keep(models).layers[0].shift == 0
    kept = recipe.replace(test_shift=2).keep(models[:1])
    assert isinstance(kept.layers[0], pn.Ensemble) and kept.layers[0].shift == 2
    with pytest.raises(ValueError, match="test_shift"):
        recipe.replace(test_shift=-1)
    with pytest.raises(ValueError, match="an MLP recipe reads flat vectors"):
        get_recipe("mlp800").replace(test_shift=1)


def test_portanet_train_finishes_cnn_best_with_batchnorm_recomputed(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from portanet.app import cli
    from portanet.averaging import recalibrate_batchnorm
    from tests.helpers import make_dataset

    dataset = make_dataset(tmp_path / "small.npz", n_train=400, n_test=100)
    model_path = tmp_path / "best.npz"
    assert cli.main(["train", "--dataset-file", str(dataset), "--model", "cnn-best",
                     "--epochs", "1", "--validation", "100", "--quiet", "--save",
                     str(model_path), "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "weights averaged (decay 0.999) and BatchNorm statistics recomputed" in printed
    assert "on the images alone; with each image also moved by 1 pixel up," in printed
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert 0.0 <= report["report"]["accuracy_images_alone"] <= 1.0
    kept = pn.load(model_path)  # test_shift 1: one network read on five views
    assert isinstance(kept.layers[0], pn.Ensemble) and kept.layers[0].shift == 1
    with pytest.raises(ValueError, match="not an ensemble"):
        recalibrate_batchnorm(kept, np.zeros((2, 1, 28, 28), np.float32))
    [saved] = pn.ensemble_members(kept)
    with np.load(dataset) as arrays:
        images = (arrays["x_train"][:300].reshape(-1, 1, 28, 28) / 255).astype(np.float32)
    [again] = pn.ensemble_members(pn.load(model_path))
    recalibrate_batchnorm(again, images)  # the same images: the same statistics
    for name, value in saved.state_dict().items():
        np.testing.assert_allclose(again.state_dict()[name], value, rtol=1e-4, atol=1e-5,
                                   err_msg=name)
