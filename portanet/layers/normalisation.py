"""Regularisation and normalisation: Dropout and BatchNorm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from portanet import number_checks
from portanet.backend import Backend
from portanet.layers.base import Layer, Shape, positive_int, sum_along
from portanet.layers.layout import inner, outer


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the
    rest by ``1 / (1 - rate)``; in evaluation mode it is the identity."""

    keeps_shape = True

    def __init__(self, rate: float = 0.5) -> None:
        super().__init__()
        self.rate = number_checks.rate("Dropout rate", rate)
        self._mask: Any = None

    def forward(self, x: Any) -> Any:
        """x: (N, ...) -> (N, ...), the same shape: ``x * mask``, the mask 0 with probability
        ``rate`` and ``1 / (1 - rate)`` elsewhere (training); ``x`` itself (evaluation)."""
        if not self.training or self.rate == 0.0:
            self._mask = None
            return x
        keep = self.backend.uniform(tuple(x.shape)) >= self.rate
        self._mask = self.xp.astype(keep, x.dtype)
        self._mask *= 1.0 / (1.0 - self.rate)  # in the new mask: no second allocation
        return x * self._mask

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, ...) -> dx: (N, ...), the same shape: ``dout * mask``."""
        return dout if self._mask is None else dout * self._mask

    def config(self) -> dict[str, Any]:
        return {"rate": self.rate}


class BatchNorm(Layer):
    """Batch normalisation over the features of (N, C) input or the channels of (N, C, H, W).

    Training: ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with the batch's mean and
    (biased) variance per feature, and the running statistics updated as PyTorch does:
    ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance.
    Evaluation: the running statistics replace the batch's.

    ``params``: "gamma" (ones) and "beta" (zeros); ``buffers``: "running_mean" (zeros) and
    "running_var" (ones), all of shape (C,).

    Data-parallel training (:mod:`portanet.parallel.engine`, threads and MPI ranks) takes the
    statistics over the whole global batch (``sync=True``, the default; PyTorch's
    SyncBatchNorm), so K workers train the weights of one. ``sync=False`` keeps each worker's
    own statistics, over its share of the batch (PyTorch DDP's default): cheaper, not equal
    to one worker; each rank keeps the running statistics of its first worker.

    ``gather`` (None by default) lets the layer take its statistics over more rows than it sees:
    the engine sets it on each worker's copy of the layer to a function ``(sums, rows) ->
    [(sums, rows) of every part]`` (in one order, this part's included) through which the parts
    exchange their per-feature sums, once forward and once backward; ``updates_running`` is
    False on the copy that leaves the running statistics to the other. Forward each part centres
    its rows on their own mean, and the parts' sums of squared deviations are merged with the
    spread of their means (Chan, Golub and LeVeque's pairwise update), so one exchange gives the
    whole batch's mean and variance without cancellation; each part then shifts its centred
    values by its mean's offset from the whole batch's, folded into per-feature constants.
    """

    gather: Callable[[tuple[Any, ...], int], list[tuple[tuple[Any, ...], int]]] | None = None
    updates_running = True

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5,
                 sync: bool = True) -> None:
        super().__init__()
        if not isinstance(sync, bool):
            raise ValueError(f"BatchNorm sync must be True (statistics over every worker's "
                             f"rows) or False (each worker's own), got {sync!r}")
        self.sync = sync
        self.num_features = positive_int("BatchNorm", "num_features", num_features)
        self.eps = number_checks.finite_positive("BatchNorm eps", eps)
        self.momentum = number_checks.finite_positive("BatchNorm momentum", momentum)
        if self.momentum > 1.0:
            raise ValueError(f"BatchNorm momentum must be in (0, 1] (the weight of each batch in "
                             f"the running statistics, e.g. 0.1), got {momentum!r}")

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        if len(shape) not in (1, 3) or shape[0] != self.num_features:
            raise ValueError(
                f"{self!r} expects samples of shape ({self.num_features},) or "
                f"({self.num_features}, height, width), got {shape}"
            )
        return shape

    def state_shapes(self) -> dict[str, Shape]:
        c = (self.num_features,)
        return {"gamma": c, "beta": c, "running_mean": c, "running_var": c}

    def check_state(self, state: dict[str, np.ndarray]) -> list[str]:
        low = float(np.min(state["running_var"]))
        if low < 0.0:
            return [f"running_var holds negative values (down to {low:g}), but a variance "
                    f"is >= 0"]
        return []

    def build(self, backend: Backend, rng: np.random.Generator) -> None:
        super().build(backend, rng)
        c = self.num_features
        self.params, self.grads = {}, {}
        self.load_param("gamma", np.ones(c))
        self.load_param("beta", np.zeros(c))
        self.load_buffer("running_mean", np.zeros(c))
        self.load_buffer("running_var", np.ones(c))

    def _table(self, x: Any) -> Any:
        """The values per feature as a table: (N, C) as is, features along axis 1;
        (N, C, H, W) as its (C, H*W*N) arrangement, channels along axis 0, a view of the image
        layers' (C, H, W, N) memory order (see :mod:`portanet.layers.layout`). Every
        elementwise result then comes out row-major on every library (CuPy writes row-major
        whatever its inputs' order)."""
        if x.ndim == 2:
            return x
        xp = self.xp
        return xp.reshape(inner(xp, x), (x.shape[1], -1))

    def _untable(self, table: Any) -> Any:
        """The (N, C) or (N, C, H, W) view of a table laid out as :meth:`_table` gives."""
        if len(self._shape) == 2:
            return table
        _, c, h, w = self._shape
        return outer(self.xp, self.xp.reshape(table, (c, h, w, -1)))

    def _per_feature(self, v: Any) -> Any:
        """A (C,) array shaped to broadcast along the table's features."""
        return v if len(self._shape) == 2 else self.xp.reshape(v, (self.num_features, 1))

    def _sample_axis(self) -> int:
        """The table's axis over samples (and positions): -2 for (N, C), -1 for (C, H*W*N)."""
        return -2 if len(self._shape) == 2 else -1

    def forward(self, x: Any) -> Any:
        """x: (N, C) or (N, C, H, W) -> y of the same shape,
        ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per feature C, with the batch's
        mean and biased var over N (and H, W) in training (the running statistics then
        updated), the running ones in evaluation."""
        xp = self.xp
        self.output_shape(tuple(x.shape[1:]))
        self._shape = tuple(x.shape)
        t = self._table(x)  # (N, C), or (C, H*W*N) for images
        gamma, beta = self.params["gamma"], self.params["beta"]
        self._offset = None
        if self.training:
            mean, var, m = self._batch_statistics(t)  # also sets _centred and _offset
            self._inv_std = 1.0 / xp.sqrt(var + self.eps)
            if self.updates_running:
                self._update_running(mean, var, m)
            scale = gamma * self._inv_std
            # y = (t - mean) * scale + beta, with t - mean = centred + offset
            shift = beta if self._offset is None else beta + self._offset * scale
            return self._untable(self._scaled_and_shifted(self._centred, scale, shift))
        # Evaluation: y = t * scale + (beta - running_mean * scale); backward centres t itself
        # if it is ever asked for a gradient in evaluation mode.
        self._inv_std = 1.0 / xp.sqrt(self.buffers["running_var"] + self.eps)
        self._centred, self._input = None, t
        scale = gamma * self._inv_std
        shift = beta - self.buffers["running_mean"] * scale
        return self._untable(self._scaled_and_shifted(t, scale, shift))

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, C) or (N, C, H, W) -> dx of the same shape (None when ``need_dx`` is
        False); sets grads gamma (C,) = sum(dout * xhat), beta (C,) = sum(dout), with
        ``xhat = (x - mean) / sqrt(var + eps)`` and the sums over N (and H, W)."""
        xp = self.xp
        d, axis = self._table(dout), self._sample_axis()
        if self._centred is None:  # evaluation mode: centred by the running mean
            self._centred = self._input - self._per_feature(self.buffers["running_mean"])
        d_sum = sum_along(xp, d, axis, self.backend.device)  # sum(d)
        d_centred = xp.vecdot(d, self._centred, axis=axis)  # sum(d * (t - mean)), one pass
        if self._offset is not None:  # t - mean = centred + offset
            d_centred = d_centred + self._offset * d_sum
        self.grads["beta"] = d_sum
        self.grads["gamma"] = d_centred * self._inv_std  # sum(d * xhat)
        if not need_dx:
            return None
        scale = self.params["gamma"] * self._inv_std
        if not self.training:  # running statistics are constants: dx = d * scale
            return self._untable(d * self._per_feature(scale))
        return self._untable(self._batch_input_gradient(d, d_sum, d_centred, scale))

    # --- speed tricks, each checked against the plain formula in tests/test_layer_tricks.py --

    def _batch_statistics(self, t: Any) -> tuple[Any, Any, int]:
        """The batch's mean and biased variance per feature of the table ``t``, and how many
        values each is over; sets ``_centred`` (t less its own rows' mean) and, when the batch
        is split, ``_offset`` (that mean less the whole batch's). The sum is a product with
        ones (:func:`sum_along`) and the sum of squares one ``vecdot`` of the centred values,
        one pass each; split, one exchange of (sum, squares) and the pairwise merge
        (:func:`_merged`) give the whole batch's statistics without cancellation."""
        xp, axis = self.xp, self._sample_axis()
        m = t.shape[axis]
        total = sum_along(xp, t, axis, self.backend.device)
        mean = total * (1.0 / m)
        self._centred = t - self._per_feature(mean)  # on these rows' own mean
        squares = xp.vecdot(self._centred, self._centred, axis=axis)
        if self.gather is not None:  # the whole batch's mean and squares, one exchange
            own_mean = mean
            mean, squares, m = _merged(self.gather((total, squares), m))
            self._offset = own_mean - mean  # t - mean = centred + offset
        return mean, squares * (1.0 / m), m

    def _update_running(self, mean: Any, var: Any, m: int) -> None:
        """``running = (1 - momentum) * running + momentum * batch``, with the unbiased
        variance of ``m`` values, as PyTorch does."""
        mom = self.momentum
        unbiased = var * (m / (m - 1)) if m > 1 else var
        running = self.buffers
        running["running_mean"] = (1.0 - mom) * running["running_mean"] + mom * mean
        running["running_var"] = (1.0 - mom) * running["running_var"] + mom * unbiased

    def _scaled_and_shifted(self, values: Any, scale: Any, shift: Any) -> Any:
        """``values * scale + shift`` per feature, in two passes over the table, the addition
        in place: every other factor of the normalisation is folded into the (C,) constants."""
        out = values * self._per_feature(scale)
        out += self._per_feature(shift)
        return out

    def _batch_input_gradient(self, d: Any, d_sum: Any, d_centred: Any, scale: Any) -> Any:
        """``dx = scale * (d - mean(d) - xhat * mean(d * xhat))`` of the table ``d`` (training
        mode), the means over the whole batch (every part's sums added, one exchange, when
        split), with the per-feature factors folded into (C,) constants: three passes over
        the table, no ``xhat`` formed."""
        m = d.shape[self._sample_axis()]
        if self.gather is not None:  # over the whole batch: every part's sums, added
            (d_sum, d_centred), m = _added(self.gather((d_sum, d_centred), m))
        inv_std = self._inv_std
        k = scale * inv_std * inv_std * d_centred * (1.0 / m)
        shift = scale * d_sum * (1.0 / m)
        if self._offset is not None:
            shift = shift + self._offset * k
        dx = d * self._per_feature(scale)
        dx -= self._centred * self._per_feature(k)
        dx -= self._per_feature(shift)
        return dx

    def config(self) -> dict[str, Any]:
        config = {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}
        if not self.sync:  # saved only when set, so files stay readable by older versions
            config["sync"] = False
        return config


def _added(parts: list[tuple[tuple[Any, ...], int]]) -> tuple[tuple[Any, ...], int]:
    """Every part's sums added, in the parts' order, and their rows."""
    (totals, rows), rest = parts[0], parts[1:]
    for sums, n in rest:
        totals, rows = tuple(a + b for a, b in zip(totals, sums, strict=True)), rows + n
    return totals, rows


def _merged(parts: list[tuple[tuple[Any, Any], int]]) -> tuple[Any, Any, int]:
    """The mean, sum of squared deviations and rows of the union of parts, each given as
    (its sum, its squared deviations from its own mean) and its rows: the pairwise update
    ``squares = squares_a + squares_b + (mean_b - mean_a)**2 * rows_a * rows_b / rows``."""
    ((total, squares), rows), rest = parts[0], parts[1:]
    mean = total * (1.0 / rows)
    for (part_total, part_squares), n in rest:
        delta = part_total * (1.0 / n) - mean
        together = rows + n
        squares = squares + part_squares + delta * delta * (rows * n / together)
        total, rows = total + part_total, together
        mean = total * (1.0 / rows)
    return mean, squares, rows
