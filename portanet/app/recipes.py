"""Training recipes: a model and how to train it, as one plain, JSON-able configuration.

The presets are named after the reference programs portanet's users come from (``linear``,
``tiny``, ``mlp512``, ``mlp1024``) plus ``mlp800``, the strongest MLP recipe we train on two
CPU cores in a few minutes (once called ``best``), and the convolutional networks:
``cnn-fast`` (99% in two epochs), ``cnn-minute`` (the same network for about a minute: the
default), ``cnn`` (99.5% in about 5 minutes) and ``cnn-best`` (the most accurate single network
we train here). ``portanet train --model NAME`` and the
scripts in ``examples/`` use them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from portanet import init, number_checks, optim
from portanet.augment import Compose, ElasticDistortion, RandomAffine, RandomShift
from portanet.averaging import WeightAverage, recalibrate_batchnorm
from portanet.backend import Backend
from portanet.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from portanet.model import Sequential, ensemble

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
OPTIMIZERS = tuple(optim.OPTIMIZERS)
SCHEDULES = ("constant", "linear", "cosine", "onecycle")
CNN_INPUT_SHAPE = (1, 28, 28)
"""Per-sample input shape of the convolutional networks (one channel of 28x28 pixels)."""


def cnn_fast_layers(classes: int = 10) -> list[Layer]:
    """Conv(1->24, 5x5) -> MaxPool 2 -> ReLU -> Conv(24->32, 3x3) -> MaxPool 2 -> ReLU ->
    Flatten -> Dense(800->256) -> ReLU -> Dense(256->classes), as fast-MNIST work uses."""
    return [Conv2D(1, 24, 5), MaxPool2D(2), ReLU(), Conv2D(24, 32, 3), MaxPool2D(2), ReLU(),
            Flatten(), Dense(800, 256), ReLU(), Dense(256, classes)]


def cnn_layers(classes: int = 10) -> list[Layer]:
    """Conv(1->32, 5x5) -> BN -> MaxPool 2 -> ReLU -> Conv(32->64, 3x3) -> BN -> MaxPool 2 ->
    ReLU -> Flatten -> Dense(1600->256) -> BN -> ReLU -> Dropout 0.3 -> Dense(256->classes).

    ReLU after the pooling computes the same function, and the same gradients, as the more
    usual ReLU before it (both are non-decreasing, so they commute: ``relu(max(a)) ==
    max(relu(a))``, and where a window's maximum is <= 0 both pass back zeros) on a quarter of
    the values; networks saved with either order load and run as saved."""
    return [Conv2D(1, 32, 5), BatchNorm(32), MaxPool2D(2), ReLU(),
            Conv2D(32, 64, 3), BatchNorm(64), MaxPool2D(2), ReLU(),
            Flatten(), Dense(1600, 256), BatchNorm(256), ReLU(), Dropout(0.3),
            Dense(256, classes)]


def cnn_best_layers(classes: int = 10) -> list[Layer]:
    """Conv(1->32, 5x5) -> BN -> MaxPool 2 -> ReLU -> Conv(32->64, 3x3) -> BN -> ReLU ->
    Conv(64->64, 3x3) -> BN -> MaxPool 2 -> ReLU -> Flatten -> Dense(1024->256) -> BN -> ReLU
    -> Dropout 0.4 -> Dense(256->classes): ``cnn`` with a third convolution before the second
    pooling (28 -> 24 -> 12 -> 10 -> 8 -> 4 pixels)."""
    return [Conv2D(1, 32, 5), BatchNorm(32), MaxPool2D(2), ReLU(),
            Conv2D(32, 64, 3), BatchNorm(64), ReLU(),
            Conv2D(64, 64, 3), BatchNorm(64), MaxPool2D(2), ReLU(),
            Flatten(), Dense(1024, 256), BatchNorm(256), ReLU(), Dropout(0.4),
            Dense(256, classes)]


NETWORKS = {"cnn-fast": cnn_fast_layers, "cnn": cnn_layers, "cnn-best": cnn_best_layers}
"""The fixed convolutional architectures a recipe can name (``Recipe.network``)."""


class _Keep:
    """The type of :data:`KEEP`."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()
"""Passed to :meth:`Recipe.replace` for a field that keeps its value (e.g. an option not given)."""


@dataclass(frozen=True)
class Recipe:
    """Everything needed to build and train a classifier on 28x28 images.

    ``network="mlp"`` is a multilayer perceptron on flattened images, shaped by ``hidden``,
    ``activation``, ``dropout``, ``input_dropout`` and the initializers; any other value names
    a fixed convolutional network from :data:`NETWORKS`, taking images of shape (1, 28, 28),
    for which those MLP fields must stay unset. ``augment_pixels`` > 0 trains on images
    shifted at random by up to that many pixels (:class:`portanet.augment.RandomShift`);
    ``rotate`` (degrees either way) or ``zoom`` (scale in 1 +- zoom) make that shift part of a
    random affine warp (:class:`~portanet.augment.RandomAffine`), and ``elastic`` > 0 adds an
    elastic distortion of that strength (``alpha``, sigma 4 pixels). ``average`` > 0 evaluates
    an exponential moving average of the weights with that decay
    (:class:`portanet.averaging.WeightAverage`); ``recalibrate`` recomputes BatchNorm's
    statistics on the plain training images after training (:meth:`finish`); ``test_shift``
    > 0 keeps the trained network(s) as an ensemble that also reads each image moved by that
    many pixels up, down, left and right (test-time augmentation, :meth:`keep`).
    ``schedule="onecycle"`` raises the learning rate to ``lr`` and lowers it again, step by
    step (:class:`portanet.optim.OneCycle`).

    Initializers are strings in :func:`portanet.init.get_initializer`'s grammar: ``"he"``,
    ``"glorot"``, ``"zeros"``, ``"normal:STD"`` or ``"uniform:LOW,HIGH"``.
    ``batch_size=None`` is full-batch gradient descent.
    """

    name: str = "custom"
    description: str = ""
    network: str = "mlp"
    hidden: tuple[int, ...] = (1024,)
    activation: str = "relu"
    dropout: float = 0.0
    input_dropout: float = 0.0
    weight_init: str = "he"
    bias_init: str = "zeros"
    loss: str = "softmax_cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    l2: float = 0.0
    schedule: str = "constant"
    final_lr: float = 0.0
    warmup_epochs: int = 0
    epochs: int = 10
    batch_size: int | None = 128
    train_subset: int | None = None
    augment_pixels: int = 0
    rotate: float = 0.0
    zoom: float = 0.0
    elastic: float = 0.0
    average: float = 0.0
    recalibrate: bool = False
    test_shift: int = 0
    reference: str = ""

    def replace(self, **changes: Any) -> Recipe:
        """A copy with the given fields changed, checked. A field given as :data:`KEEP` keeps
        its value; any other value is set, ``None`` included (``batch_size=None``: full batch).
        """
        changes = {k: v for k, v in changes.items() if v is not KEEP}
        recipe = dataclasses.replace(self, **changes)
        recipe.check()
        return recipe

    def check(self) -> None:
        """Raise ValueError naming any field out of range."""
        if self.network != "mlp":
            if self.network not in NETWORKS:
                raise ValueError(f"network must be 'mlp' or one of {', '.join(NETWORKS)}")
            mlp_only = {"hidden": (), "activation": "relu", "dropout": 0.0,
                        "input_dropout": 0.0, "weight_init": "he", "bias_init": "zeros"}
            odd = [k for k, v in mlp_only.items() if getattr(self, k) != v]
            if odd:
                what, pronoun = ("is an MLP setting", "it") if len(odd) == 1 else \
                    ("are MLP settings", "them")
                raise ValueError(
                    f"{', '.join(odd)} {what}, but recipe {self.name!r} trains the fixed "
                    f"convolutional network {self.network!r}; leave {pronoun} out (or pick an "
                    f"MLP preset such as 'mlp800')"
                )
        if self.augment_pixels < 0:
            raise ValueError(f"augment_pixels must be >= 0, got {self.augment_pixels}")
        self.make_augment()
        number_checks.non_negative_int("test_shift", self.test_shift)
        if self.test_shift and self.network == "mlp":
            raise ValueError("test_shift moves images, but an MLP recipe reads flat vectors; "
                             "leave it at 0 or train a convolutional network")
        number_checks.rate("average", self.average)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}")
        if self.optimizer not in optim.OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(optim.OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}")
        for width in self.hidden:
            number_checks.positive_int("hidden layer width", width)
        for what in ("dropout", "input_dropout"):
            number_checks.rate(what, getattr(self, what))
        number_checks.non_negative_int("epochs", self.epochs)
        if self.batch_size is not None:
            number_checks.positive_int("batch size", self.batch_size)
        number_checks.finite_positive("lr", self.lr)
        init.get_initializer(self.weight_init)
        init.get_initializer(self.bias_init)

    def describe(self) -> str:
        """One line: optimizer, learning rate, schedule, batch, epochs and regularisation."""
        return (f"{self.optimizer} lr {self.lr} ({self.schedule}), "
                f"batch {self.batch_size or 'full'}, {self.epochs} epochs"
                + (f", dropout {self.dropout}" if self.dropout else "")
                + (f", L2 {self.l2}" if self.l2 else "")
                + (f", weight decay {self.weight_decay}" if self.weight_decay else ""))

    def as_dict(self) -> dict[str, Any]:
        """The recipe as a JSON-able dict."""
        return dataclasses.asdict(self)

    def build(
        self, backend: Backend | str | None = None, seed: int | None = 0,
        in_features: int = 784, classes: int = 10, dtype: str | None = None,
    ) -> Sequential:
        """The model this recipe describes (``in_features`` applies to MLPs only)."""
        if self.network != "mlp":
            return Sequential(NETWORKS[self.network](classes), backend=backend, seed=seed,
                              dtype=dtype, input_shape=CNN_INPUT_SHAPE)
        layers: list[Layer] = []
        if self.input_dropout:
            layers.append(Dropout(self.input_dropout))
        width = in_features
        for h in self.hidden:
            layers += [Dense(width, h, self.weight_init, self.bias_init),
                       ACTIVATIONS[self.activation]()]
            if self.dropout:
                layers.append(Dropout(self.dropout))
            width = h
        layers.append(Dense(width, classes, self.weight_init, self.bias_init))
        return Sequential(layers, backend=backend, seed=seed, dtype=dtype)

    def make_optimizer(self) -> optim.Optimizer:
        """The optimizer this recipe describes, from :data:`portanet.optim.OPTIMIZERS`; the
        recipe's ``momentum`` goes to the optimizers whose entry there sets one."""
        make = optim.OPTIMIZERS[self.optimizer]
        takes_momentum = "momentum" in getattr(make, "keywords", {})
        extra = {"momentum": self.momentum} if takes_momentum else {}
        return make(self.lr, weight_decay=self.weight_decay, **extra)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The per-sample image shape the network takes: (1, 28, 28) for a CNN, None (flat
        vectors) for an MLP."""
        return None if self.network == "mlp" else CNN_INPUT_SHAPE

    def make_schedule(self) -> optim.Schedule | None:
        """The per-epoch learning-rate schedule, or None (constant rate, or one-cycle, which
        :meth:`fit_arguments` builds into the optimizer)."""
        if self.schedule == "linear":
            return optim.linear_decay(self.lr, self.final_lr)
        if self.schedule == "cosine":
            return optim.cosine_decay(self.lr, self.final_lr, self.warmup_epochs)
        return None

    def make_augment(self) -> Any:
        """The training batches' augmentation (None: none)."""
        steps: list[Any] = []
        if self.rotate or self.zoom:
            steps.append(RandomAffine(self.rotate, (1.0 - self.zoom, 1.0 + self.zoom),
                                      translate=float(self.augment_pixels)))
        elif self.augment_pixels:
            steps.append(RandomShift(self.augment_pixels))
        if self.elastic:
            steps.append(ElasticDistortion(self.elastic, 4.0))
        return None if not steps else steps[0] if len(steps) == 1 else Compose(*steps)

    def finish(self, model: Sequential, X: Any) -> None:
        """What follows ``fit`` on the training images ``X``: with ``recalibrate``, BatchNorm's
        running statistics become those of the final weights on the plain images
        (:func:`portanet.averaging.recalibrate_batchnorm`); augmented batches and moving
        weights leave them off (cnn-best: 98.3% validation accuracy before, 99.4% after)."""
        if self.recalibrate:
            recalibrate_batchnorm(model, X)

    def keep(self, models: list[Sequential]) -> Sequential:
        """The model a run keeps from its trained ``models``: the one model, or their
        ensemble (:func:`portanet.ensemble`), read on shifted views with ``test_shift``."""
        if len(models) == 1 and not self.test_shift:
            return models[0]
        return ensemble(models, shift=self.test_shift)

    def fit_arguments(self, samples: int = 60000, model: Sequential | None = None
                      ) -> dict[str, Any]:
        """Keyword arguments for :func:`portanet.fit` (optimizer included) for training on
        ``samples`` images (the one-cycle schedule counts steps); given the ``model``, a
        recipe with ``average`` adds its :class:`~portanet.averaging.WeightAverage` callback
        (without it the weights are not averaged)."""
        optimizer = self.make_optimizer()
        if self.schedule == "onecycle":
            steps = self.epochs * number_checks.ceil_div(samples, self.batch_size or samples)
            optimizer = optim.OneCycle(optimizer, self.lr, max(steps, 1))
        kwargs: dict[str, Any] = {
            "loss": self.loss,
            "optimizer": optimizer,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "l2": self.l2,
            "lr_schedule": self.make_schedule(),
        }
        augment = self.make_augment()
        if augment is not None:
            kwargs["augment"] = augment
        if self.average and model is not None:
            kwargs["callbacks"] = [WeightAverage(model, self.average)]
        return kwargs


def parse_hidden(text: str) -> tuple[int, ...]:
    """Hidden layer widths from ``"512,256"`` (``""``: no hidden layer).

    Raises:
        ValueError: a width is not a whole number.
    """
    try:
        return tuple(int(width) for width in text.split(",") if width.strip())
    except ValueError:
        raise ValueError(f"hidden layer widths are whole numbers like 512,256, got {text!r}"
                         ) from None


def parse_batch_size(text: str) -> int | None:
    """A batch size from ``"128"``, or ``None`` (full-batch gradient descent) from ``"full"``.

    Raises:
        ValueError: neither a whole number nor ``"full"``.
    """
    if text.strip().lower() == "full":
        return None
    try:
        size = int(text)
    except ValueError:
        raise ValueError(f"a batch size is a whole number or 'full', got {text!r}") from None
    if size < 1:
        raise ValueError(f"a batch size is at least 1 (or 'full'), got {text!r}")
    return size


PRESETS: dict[str, Recipe] = {
    "linear": Recipe(
        name="linear",
        description="one layer, 10 classes, per-sample SGD on squared error over softmax",
        hidden=(), weight_init="zeros", loss="softmax_squared_error", optimizer="sgd",
        lr=0.01, epochs=1, batch_size=1,
        reference="one-layer 10x28x28 model trained per sample (reported: over 90%)",
    ),
    "tiny": Recipe(
        name="tiny",
        description="784-10-10 ReLU, full-batch gradient descent on the first 41,000 images",
        hidden=(10,), weight_init="uniform:-0.5,0.5", bias_init="uniform:-0.5,0.5",
        optimizer="sgd", lr=0.1, epochs=500, batch_size=None, train_subset=41000,
        reference="784-10-10 net, full-batch GD, alpha 0.1, 500 iterations (reported: 84%)",
    ),
    "mlp512": Recipe(
        name="mlp512",
        description="784-512-10 ReLU after the TensorFlow tutorial, minibatch SGD",
        hidden=(512,), weight_init="normal:0.01", optimizer="sgd", lr=0.01, epochs=5,
        batch_size=64,
        reference="784-512-10 net after the TensorFlow tutorial (reported: 92-95%)",
    ),
    "mlp1024": Recipe(
        name="mlp1024",
        description="784-1024-10 ReLU, softmax cross-entropy, L2 1e-4, minibatch SGD",
        hidden=(1024,), weight_init="he", optimizer="sgd", lr=0.5, l2=1e-4, epochs=8,
        batch_size=256,
        reference="784-1024-10 ReLU net, L2, minibatch SGD (reported: 97.87%)",
    ),
    "mlp800": Recipe(
        name="mlp800",
        description="784-800-800-10 ReLU with dropout, Nesterov momentum and a cosine "
                    "schedule: the strongest MLP we train on 2 CPU cores in under 3 minutes",
        hidden=(800, 800), dropout=0.3, input_dropout=0.2, weight_init="he",
        optimizer="nesterov", lr=0.1, momentum=0.9, schedule="cosine", final_lr=0.0,
        epochs=20, batch_size=256,
        reference="beyond the references: wide ReLU layers, dropout on inputs and hidden units, "
                  "Nesterov momentum, cosine learning-rate decay (98.7% on MNIST)",
    ),
    "cnn-fast": Recipe(
        name="cnn-fast",
        description="two convolutions with max-pooling and a 256-wide dense layer, Adam with a "
                    "one-cycle learning rate, two epochs",
        network="cnn-fast", hidden=(), optimizer="adam", lr=1e-2, schedule="onecycle",
        epochs=2, batch_size=256,
        reference="the network published fast-MNIST work trains to 99% in one epoch",
    ),
    "cnn-minute": Recipe(
        name="cnn-minute",
        description="cnn-fast's network trained for five epochs on images shifted at random by "
                    "up to 2 pixels: the most accurate model for about a minute on 2 CPU cores "
                    "(portanet train's default)",
        network="cnn-fast", hidden=(), optimizer="adam", lr=1e-2, schedule="onecycle",
        epochs=5, batch_size=256, augment_pixels=2,
        reference="beyond the references: 99.35% validation accuracy in about a minute",
    ),
    "cnn": Recipe(
        name="cnn",
        description="two wider convolutions and a dense layer, each with BatchNorm, dropout, "
                    "random shifts of up to 2 pixels, Adam with a one-cycle learning rate",
        network="cnn", hidden=(), optimizer="adam", lr=3e-3, schedule="onecycle",
        epochs=12, batch_size=128, augment_pixels=2,
        reference="beyond the references: BatchNorm, augmentation, one-cycle Adam (goal 99.5%)",
    ),
    "cnn-best": Recipe(
        name="cnn-best",
        description="three convolutions and a dense layer with BatchNorm and dropout, random "
                    "rotations, zooms and shifts, Adam with a one-cycle learning rate, 36 "
                    "epochs, weights averaged, BatchNorm recomputed on the plain images, "
                    "predictions averaged over the image and four copies moved by a pixel",
        network="cnn-best", hidden=(), optimizer="adam", lr=3e-3, schedule="onecycle",
        epochs=36, batch_size=128, augment_pixels=2, rotate=10.0, zoom=0.1, average=0.999,
        recalibrate=True, test_shift=1,
        reference="beyond the references: toward the 99.79% record (goal 99.7%, mean of 3)",
    ),
}

DEFAULT_PRESET = "cnn-minute"


OLD_NAMES = {"best": "mlp800"}
"""Presets renamed, by their old names: ``best`` was the default MLP, named for being the most
accurate network here before the CNNs came."""


def get_recipe(name: str) -> Recipe:
    """A preset by name (an old name from :data:`OLD_NAMES` gives the renamed preset)."""
    try:
        return PRESETS[OLD_NAMES.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")\
            from None
