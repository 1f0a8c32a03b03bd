"""Sequential: a chain of layers living on one backend."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from portanet.backend import Backend, get_backend, host_array
from portanet.layers import Layer, Shape


class Sequential:
    """Layers applied one after the other, all on one backend.

    Args:
        layers: the layers, in order. Each is built (its parameters created) here.
        backend: a :class:`Backend`, a backend name, or ``None`` for the default
            (``PORTANET_BACKEND``, else ``"auto"``).
        seed: seeds the model's host random generator, used for initial weights, shuffling
            and augmentation (each Dropout layer draws its masks from a generator of its own,
            derived from this seed); the same seed gives the same initial weights, shuffles and
            shifts on every backend.
            ``None`` draws from the backend's generator.
        dtype: ``"float32"`` or ``"float64"``; default: the backend's dtype (float32 for a
            backend given by name).
        input_shape: the shape of one input sample, e.g. ``(1, 28, 28)`` for a CNN on MNIST or
            ``(784,)`` for an MLP. The chain of layers is checked against it here: the first
            layer that cannot take its input raises a ValueError naming both shapes. Without
            it, a model whose first shape-fixing layer is a Dense layer (after activations or
            dropout only) takes ``(in_features,)``; otherwise the shape stays unknown and
            inputs are checked when they arrive.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        backend: Backend | str | None = None,
        seed: int | None = None,
        dtype: str | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not a portanet Layer")
            if layer.backend is not None:
                raise ValueError(
                    f"layer {i} ({layer!r}) already belongs to a model; create a new layer"
                )
        base = get_backend(backend, dtype or "float32")
        if dtype is not None:
            base = base.with_dtype(dtype)
        if seed is None:
            seed = int(base.rng.integers(2**63))
        # A private copy of the backend with the model's own generator: models don't share state.
        self.backend = base.fork(seed)
        self.seed = seed
        self.layers = layers
        if input_shape is not None:
            self.input_shape: Shape | None = _shape_tuple(input_shape)
            self.output_shape: Shape | None = self.shapes_from(self.input_shape)[-1]
        else:
            self.input_shape, self.output_shape = _inferred_shapes(layers)
        for layer in layers:
            layer.build(self.backend, self.backend.rng)
        own_mask_generators(self)
        self._slots = [
            (f"{i}.{key}", layer.params, layer.grads, key)
            for i, layer in enumerate(layers)
            for key in layer.params
        ]

    @property
    def xp(self) -> Any:
        """The backend's array namespace."""
        return self.backend.xp

    @property
    def num_outputs(self) -> int | None:
        """Width of the model's (per-sample 1-D) output, from the chain of output shapes;
        None when it is not known or the output is not one vector per sample."""
        shape = self.output_shape
        return shape[0] if shape is not None and len(shape) == 1 else None

    def shapes_from(self, input_shape: Sequence[int], what: str = "input") -> list[Shape]:
        """The per-sample shape after each layer for samples of ``input_shape`` (the input
        itself first). Raises ValueError naming the first layer that does not fit, with the
        shape it got; ``what`` names the input in that message."""
        shapes = [_shape_tuple(input_shape)]
        for i, layer in enumerate(self.layers):
            try:
                shapes.append(tuple(layer.output_shape(shapes[-1])))
            except ValueError as exc:
                start = "" if i == 0 else f" (after layers 0-{i - 1} it has shape {shapes[-1]})"
                raise ValueError(
                    f"layer {i} does not fit the {what} of shape {shapes[0]}{start}: {exc}"
                ) from None
        return shapes

    def forward(self, x: Any) -> Any:
        """Run the layers on a batch ``x`` (an array of this model's backend)."""
        self.backend.check_array(x, "the input")
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once at
        the boundary (``fit``, ``evaluate``, ``predict``)."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout: Any, need_input_grad: bool = True) -> Any:
        """Backpropagate dL/d(output), filling each layer's ``grads``; returns dL/d(input).

        With ``need_input_grad=False`` the first layer skips the input gradient (returns None).
        """
        layers = self.layers
        last = len(layers) - 1
        for i in range(last, -1, -1):
            dout = layers[i].backward(dout, need_dx=need_input_grad or i > 0)
        return dout

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def train(self) -> Sequential:
        """Training mode (dropout active). Returns the model."""
        for layer in self.layers:
            layer.training = True
        return self

    def eval(self) -> Sequential:
        """Evaluation mode (dropout off). Returns the model."""
        for layer in self.layers:
            layer.training = False
        return self

    def named_parameters(self) -> Iterator[tuple[str, Any, Any]]:
        """Yield ``(name, param, grad)`` with names like ``"0.W"``; grad is None before backward."""
        for name, params, grads, key in self._slots:
            yield name, params[key], grads.get(key)

    def parameter_slots(self) -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
        """``(name, layer.params, layer.grads, key)`` for each parameter: what optimizers update."""
        return self._slots

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return sum(int(np.prod(p.shape)) for _, p, _ in self.named_parameters())

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        """Yield ``(name, buffer)`` with names like ``"3.running_mean"`` (saved, not trained)."""
        for i, layer in enumerate(self.layers):
            for key, value in layer.buffers.items():
                yield f"{i}.{key}", value

    def state_dict(self) -> dict[str, np.ndarray]:
        """All parameters and buffers as new host NumPy arrays, keyed by name."""
        state = {name: self.backend.to_numpy(p) for name, p, _ in self.named_parameters()}
        state.update((name, self.backend.to_numpy(b)) for name, b in self.named_buffers())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Set the parameters and buffers from host arrays keyed by name (as
        :meth:`state_dict` returns).

        Raises a ValueError listing missing or unexpected names and shape mismatches; nothing
        is changed unless every array fits.
        """
        # Device arrays get portanet's error naming the conversion, not an implicit copy.
        state = {name: host_array(value, f"state[{name!r}]") for name, value in state.items()}
        expected = {name: tuple(p.shape) for name, p, _ in self.named_parameters()}
        expected.update((name, tuple(b.shape)) for name, b in self.named_buffers())
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [
            f"{name}: expected {expected[name]}, got {tuple(np.shape(state[name]))}"
            for name in expected
            if name in state and tuple(np.shape(state[name])) != expected[name]
        ]
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected)}")
        if wrong:
            problems.append("shape mismatch " + "; ".join(wrong))
        not_float = [n for n in expected if n in state and state[n].dtype.kind != "f"]
        if not_float:
            problems.append(f"not floating point: {', '.join(not_float)}")
        if problems:
            raise ValueError(
                "state does not fit this model's layers: " + "; ".join(problems)
                + f". The model is {self!r}"
            )
        for i, layer in enumerate(self.layers):
            for key in layer.params:
                layer.load_param(key, state[f"{i}.{key}"])
            for key in list(layer.buffers):
                layer.load_buffer(key, state[f"{i}.{key}"])

    def summary(self) -> str:
        """A table of layers, output shapes (when the input shape is known) and parameter
        counts."""
        lines = [f"Sequential on {self.backend.name} ({self.backend.dtype_name})"
                 + (f", input {self.input_shape}" if self.input_shape else "")]
        shapes = self.shapes_from(self.input_shape)[1:] if self.input_shape else None
        for i, layer in enumerate(self.layers):
            count = sum(int(np.prod(p.shape)) for p in layer.params.values())
            shape = str(shapes[i]) if shapes else ""
            lines.append(f"  {i:>2}  {layer!r:<48} {shape:<14} {count:>10,} params")
        lines.append(f"  total {self.num_parameters():,} parameters")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "Sequential([" + ", ".join(repr(layer) for layer in self.layers) + "])"


def _shape_tuple(shape: Sequence[int]) -> Shape:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        result = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"a shape must be a tuple of positive ints, got {shape!r}") from None
    if not result or any(d < 1 for d in result) or any(
        isinstance(d, bool) or int(d) != d for d in shape
    ):
        raise ValueError(f"a shape must be a tuple of positive ints, got {shape!r}")
    return result


def _inferred_shapes(layers: Sequence[Layer]) -> tuple[Shape | None, Shape | None]:
    """Input and output shape when no input shape is given. The input shape is known when the
    first layer whose arguments fix its input (Dense) comes after shape-keeping layers only;
    otherwise the output shape is still known from that layer on."""
    hints = [i for i, layer in enumerate(layers) if layer.input_shape_hint() is not None]
    if not hints:
        return None, None
    first = hints[0]
    if all(layer.keeps_shape for layer in layers[:first]):
        start, input_shape = 0, layers[first].input_shape_hint()
    else:
        start, input_shape = first, None
    shape = layers[start].input_shape_hint() if input_shape is None else input_shape
    for i, layer in enumerate(layers[start:], start):
        try:
            shape = tuple(layer.output_shape(shape))
        except ValueError as exc:
            raise ValueError(f"layer {i} does not fit the layers before it: {exc}") from None
    return input_shape, shape


def class_names_for(model: Sequential, names: Sequence[str]) -> list[str]:
    """``names`` fitted to the classes ``model`` predicts: numbered beyond the named ones.

    Raises:
        ValueError: the data has more classes than the model has outputs.
    """
    k = model.num_outputs or len(names)
    if len(names) > k:
        raise ValueError(f"the data has {len(names)} classes but the model predicts only {k}; "
                         f"was it trained on other data?")
    return [*names, *(str(i) for i in range(len(names), k))]


def own_mask_generators(model: Sequential, worker: int = 0) -> None:
    """Give each Dropout layer a mask stream of its own, that of data-parallel worker
    ``worker`` (:func:`portanet.random_streams.dropout_stream`; one process is worker 0, MPI
    rank r with one thread worker r), so masks never draw from the model's generator and no
    two layers or workers share a stream."""
    from portanet.layers import Dropout
    from portanet.random_streams import dropout_stream

    for i, layer in enumerate(model.layers):
        if isinstance(layer, Dropout) and getattr(layer, "_mask_rank", None) != worker:
            layer.backend = dropout_stream(model, i, worker)
            layer._mask_rank = worker


def ensemble(models: Sequence[Sequential], *, shift: int = 0) -> Sequential:
    """One model whose class probabilities are the mean of ``models``' (at least two, with the
    same input shape and number of classes): a :class:`~portanet.layers.Ensemble` layer
    holding copies of their layers and weights, on the first model's backend and dtype. It
    evaluates, predicts, saves, loads and exports like any model; it is not trained itself.
    An ensemble among ``models`` gives its members (:func:`ensemble_members`); its ``shift``
    does not carry over.

    ``shift`` > 0 (image models) averages over views too: each image and four copies moved by
    ``shift`` pixels up, down, left and right (test-time augmentation; five times the work).
    With ``shift``, one model is enough: ``ensemble([model], shift=1)``.

    Raises:
        ValueError: too few models, or models whose inputs, classes or dtypes differ
            (named in the message), or a shift their inputs cannot take.
    """
    from portanet.layers import Ensemble
    from portanet.layers.ensemble import check_shift

    check_shift(shift)
    models = [m for model in models for m in ensemble_members(model)]
    fewest = 1 if shift else 2
    if len(models) < fewest or not all(isinstance(m, Sequential) for m in models):
        raise ValueError(f"an ensemble is made of two or more portanet models (or one, with "
                         f"shift > 0), got {len(models)} "
                         f"({', '.join(type(m).__name__ for m in models)})")
    first = models[0]
    for k, model in enumerate(models[1:], start=1):
        for what, get in (("input shape", lambda m: m.input_shape),
                          ("number of classes", lambda m: m.num_outputs),
                          ("dtype", lambda m: m.backend.dtype_name)):
            if get(model) != get(first):
                raise ValueError(f"model {k} has the {what} {get(model)}, model 0 has "
                                 f"{get(first)}; an ensemble's members must agree on it")
    if first.input_shape is None or any(isinstance(layer, Ensemble)
                                        for m in models for layer in m.layers):
        raise ValueError("an ensemble's members need a known input shape (build them with "
                         "Sequential(..., input_shape=...)) and may not hold ensembles")
    specs = [[{"type": type(layer).__name__, **layer.config()} for layer in m.layers]
             for m in models]
    combined = Sequential([Ensemble(specs, shift)], backend=first.backend, seed=first.seed,
                          dtype=first.backend.dtype_name, input_shape=first.input_shape)
    combined.load_state_dict({f"0.{k}.{name}": value for k, m in enumerate(models)
                              for name, value in m.state_dict().items()})
    return combined.eval()


def ensemble_members(model: Sequential) -> list[Sequential]:
    """The networks an ensemble model averages, each a model of its own with its weights, on
    the ensemble's backend; for a model that is not an ensemble, ``[model]``."""
    from portanet.layers import Ensemble

    layer = model.layers[0]
    if len(model.layers) != 1 or not isinstance(layer, Ensemble):
        return [model]
    state = model.state_dict()
    members = []
    for k, layers in enumerate(layer.fresh_members()):
        member = Sequential(layers, backend=model.backend, seed=model.seed,
                            dtype=model.backend.dtype_name, input_shape=model.input_shape)
        prefix = f"0.{k}."
        member.load_state_dict({key[len(prefix):]: value for key, value in state.items()
                                if key.startswith(prefix)})
        members.append(member.eval())
    return members
