"""The memory order the image layers share: (C, H, W, N), channels first and the batch innermost.

Inputs and outputs of every layer are (N, C, H, W) arrays, as in PyTorch. Inside, convolution,
pooling and BatchNorm work on the (C, H, W, N) arrangement of the same data: ``permute_dims``
makes it a view, and every layer hands back a view of a (C, H, W, N) buffer, so a chain of image
layers (and the elementwise layers between them, which keep their input's memory order) never
transposes. Flatten hands Dense a transposed view, which the matrix product reads as it is.

Why the batch innermost: every slice an image layer takes (a kernel offset of a convolution, a
position in a pooling window, a shifted block in col2im) then moves whole runs of at least N
contiguous numbers, usually Wo*N. With the batch outside (N, C, H, W) the same slices move runs
of Wo (10 or 24 numbers), and an array library's per-run overhead, not the arithmetic, sets the
speed (about three times slower on NumPy).
"""

from __future__ import annotations

from typing import Any

TO_INNER = (1, 2, 3, 0)
"""``permute_dims`` axes from (N, C, H, W) to (C, H, W, N)."""

TO_OUTER = (3, 0, 1, 2)
"""``permute_dims`` axes from (C, H, W, N) back to (N, C, H, W)."""


def inner(xp: Any, x: Any) -> Any:
    """The (C, H, W, N) arrangement of a (N, C, H, W) array, copied once into that memory order
    unless it already is in it (a reshape copies only what is not contiguous)."""
    c, h, w = (int(n) for n in x.shape[1:])
    flat = xp.reshape(xp.permute_dims(x, TO_INNER), (-1,))
    return xp.reshape(flat, (c, h, w, -1))  # the batch axis inferred: it may be symbolic


def outer(xp: Any, x: Any) -> Any:
    """The (N, C, H, W) view of a (C, H, W, N) array."""
    return xp.permute_dims(x, TO_OUTER)


def elementwise(xp: Any, fn: Any, *arrays: Any) -> Any:
    """``fn(*arrays)`` for elementwise ``fn``, computed on the (C, H, W, N) views of
    (N, C, H, W) arrays and handed back as the (N, C, H, W) view of the result. NumPy keeps an
    input's memory order in elementwise results anyway; CuPy writes them row-major in the
    order of the shape it is given, which this makes the (C, H, W, N) order the image layers
    work in (else each image layer after an activation would copy its input back into it).
    Arrays of other ranks go to ``fn`` as they are."""
    if arrays[0].ndim != 4:
        return fn(*arrays)
    return outer(xp, fn(*(xp.permute_dims(a, TO_INNER) for a in arrays)))
