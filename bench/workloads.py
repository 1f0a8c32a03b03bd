"""The comparison workloads, written without portanet: the floor, the limit, PyTorch.

Each class runs one epoch (or the first ``m`` samples of one) per :meth:`run` call on arrays
already on the device, and keeps its weights between calls, like a training loop would.

* Floor: one SGD step of the 784-H-10 ReLU MLP with softmax cross-entropy and L2, written inline
  with the backend's own arrays, the fastest plain way (see :class:`ArrayModuleFloor`). Every
  floor draws one host permutation per epoch and gathers each batch from the resident data by
  index; none holds a shuffled copy of the data set.
* Limit: the step's five matrix products alone, with the right shapes, into preallocated
  outputs; no shuffle, no elementwise work.
* PyTorch: ``torch.nn`` layers, ``torch.nn.functional.cross_entropy`` and
  ``torch.optim.SGD`` (weight decay on the weight matrices), one ``randperm`` per epoch and an
  ``index_select`` per batch.
* Per-sample and full-batch floors: the plain NumPy programs of references D and B.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Params = dict[str, np.ndarray]
"""Host copies of the initial weights: W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,)."""


def _batches(n: int, batch: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + batch, n)) for lo in range(0, n, batch)]


# --- NumPy / CuPy ------------------------------------------------------------------------------


class ArrayModuleFloor:
    """The floor on NumPy or CuPy (``m`` is the module; the code is the same for both).

    The fastest plain program a NumPy user writes: each step gathers its batch from the
    resident data with one permutation per epoch (``X[perm[lo:hi]]``, no shuffled copy of the
    data set), the learning rate is folded into the output gradient (so each weight update is
    one in-place ``W -= grad``), bias add and ReLU in place, the ReLU gradient as a mask
    multiply, matrix products into buffers allocated once, no loss value. L2 (``reg``) is
    ``W *= 1 - lr * reg`` before the update: the exact gradient term, in place, and no penalty.

    :meth:`step` takes an optional ``tick(phase)`` called after each phase; the phased floor of
    the profile is this same step with a timer as ``tick``.
    """

    name = "floor"

    def __init__(self, m: Any, params: Params, batch: int, lr: float, seed: int,
                 reg: float = 0.0) -> None:
        self.m = m
        self.W1, self.b1 = m.array(params["W1"]), m.array(params["b1"])
        self.W2, self.b2 = m.array(params["W2"]), m.array(params["b2"])
        self.batch, self.lr, self.reg = int(batch), float(lr), float(reg)
        self.rng = np.random.default_rng(seed)
        self.rows = m.arange(self.batch)
        hidden, classes = self.W2.shape
        dtype = self.W1.dtype
        self.h = m.empty((self.batch, hidden), dtype=dtype)
        self.z = m.empty((self.batch, classes), dtype=dtype)
        self.dh = m.empty((self.batch, hidden), dtype=dtype)
        self.g1, self.g2 = m.empty_like(self.W1), m.empty_like(self.W2)

    def run(self, X: Any, y: Any, tick: Any = None) -> None:
        """One epoch over ``(X, y)``, in a fresh random order."""
        m, n = self.m, X.shape[0]
        perm = m.asarray(self.rng.permutation(n))
        if tick:
            tick("rest of fit (shuffle, loss, bookkeeping)")
        for lo in range(0, n, self.batch):
            idx = perm[lo:lo + self.batch]
            self.step(m.take(X, idx, axis=0), m.take(y, idx), tick)

    def step(self, xb: Any, yb: Any, tick: Any = None) -> None:
        """One SGD step on a batch; ``tick(phase)`` after each phase when given."""
        m, mm, lr, k = self.m, self.m.matmul, self.lr, xb.shape[0]
        W1, b1, W2, b2, g1, g2 = self.W1, self.b1, self.W2, self.b2, self.g1, self.g2
        if tick:
            tick("rest of fit (shuffle, loss, bookkeeping)")  # the gather
        h = mm(xb, W1, out=self.h[:k])
        h += b1
        if tick:
            tick("forward 0 Dense")
        m.maximum(h, 0, out=h)                           # A1 (ReLU in place)
        if tick:
            tick("forward 1 ReLU")
        z = mm(h, W2, out=self.z[:k])
        z += b2
        if tick:
            tick("forward 2 Dense")
        z -= z.max(axis=1, keepdims=True)
        m.exp(z, out=z)
        z *= (lr / k) / z.sum(axis=1, keepdims=True)     # lr * softmax / k
        z[self.rows[:k], yb] -= lr / k                   # lr * (softmax - onehot) / k = lr*dZ2
        if tick:
            tick("rest of fit (shuffle, loss, bookkeeping)")
        dh = mm(z, W2.T, out=self.dh[:k])
        mm(h.T, z, out=g2)
        gb2 = z.sum(axis=0)
        if tick:
            tick("backward 2 Dense")
        dh *= h > 0                                      # lr * dZ1 (fastest NumPy mask form)
        if tick:
            tick("backward 1 ReLU")
        mm(xb.T, dh, out=g1)
        gb1 = dh.sum(axis=0)
        if tick:
            tick("backward 0 Dense")
        if self.reg:
            W2 *= 1.0 - lr * self.reg
            W1 *= 1.0 - lr * self.reg
        W2 -= g2
        b2 -= gb2
        W1 -= g1
        b1 -= gb1
        if tick:
            tick("optimizer.step")


class ArrayModuleLimit:
    """The five matrix products of a step on NumPy or CuPy, into preallocated outputs."""

    name = "limit"

    def __init__(self, m: Any, params: Params, batch: int) -> None:
        self.m = m
        hidden, classes = params["W2"].shape
        dtype = params["W1"].dtype
        self.W1, self.W2 = m.array(params["W1"]), m.array(params["W2"])
        self.batch = int(batch)
        self.h = m.empty((batch, hidden), dtype=dtype)
        self.z = m.empty((batch, classes), dtype=dtype)
        self.dh = m.empty((batch, hidden), dtype=dtype)
        self.g1 = m.empty(self.W1.shape, dtype=dtype)
        self.g2 = m.empty(self.W2.shape, dtype=dtype)

    def run(self, X: Any, y: Any) -> None:
        mm = self.m.matmul
        W1, W2, g1, g2 = self.W1, self.W2, self.g1, self.g2
        for lo, hi in _batches(X.shape[0], self.batch):
            xb, k = X[lo:hi], hi - lo
            h, z, dh = self.h[:k], self.z[:k], self.dh[:k]
            mm(xb, W1, out=h)          # X @ W1       (k, 784) @ (784, H)
            mm(h, W2, out=z)           # A1 @ W2      (k, H) @ (H, 10)
            mm(z, W2.T, out=dh)        # dZ2 @ W2.T   (k, 10) @ (10, H)
            mm(h.T, z, out=g2)         # A1.T @ dZ2   (H, k) @ (k, 10)
            mm(xb.T, dh, out=g1)       # X.T @ dZ1    (784, k) @ (k, H)


# --- PyTorch tensors (the floor and limit when portanet runs on its torch backend) ---------------


class TorchFloor:
    """The floor with PyTorch tensors, no autograd; weight updates fused with ``addmm_``."""

    name = "floor"

    def __init__(self, torch: Any, device: Any, params: Params, batch: int, lr: float,
                 seed: int, reg: float = 0.0) -> None:
        self.torch, self.device = torch, device
        t = {k: torch.tensor(v, device=device) for k, v in params.items()}
        self.W1, self.b1, self.W2, self.b2 = t["W1"], t["b1"], t["W2"], t["b2"]
        self.batch, self.lr, self.reg = int(batch), float(lr), float(reg)
        self.rng = np.random.default_rng(seed)
        self.rows = torch.arange(self.batch, device=device)

    def run(self, X: Any, y: Any) -> None:
        torch, lr = self.torch, self.lr
        W1, b1, W2, b2, rows = self.W1, self.b1, self.W2, self.b2, self.rows
        n = X.shape[0]
        with torch.no_grad():
            perm = torch.as_tensor(self.rng.permutation(n), device=self.device)
            for lo, hi in _batches(n, self.batch):
                idx, k = perm[lo:hi], hi - lo
                xb, yb = X.index_select(0, idx), y.index_select(0, idx)
                h = torch.addmm(b1, xb, W1).clamp_(min=0)
                z = torch.addmm(b2, h, W2)
                z -= z.amax(dim=1, keepdim=True)
                z.exp_()
                z *= (lr / k) / z.sum(dim=1, keepdim=True)
                z[rows[:k], yb] -= lr / k
                dh = (z @ W2.T).mul_(h > 0)
                if self.reg:
                    W2.mul_(1.0 - lr * self.reg)
                    W1.mul_(1.0 - lr * self.reg)
                W2.addmm_(h.T, z, alpha=-1.0)
                b2 -= z.sum(dim=0)
                W1.addmm_(xb.T, dh, alpha=-1.0)
                b1 -= dh.sum(dim=0)


class TorchLimit:
    """The five matrix products of a step with PyTorch tensors, into preallocated outputs."""

    name = "limit"

    def __init__(self, torch: Any, device: Any, params: Params, batch: int) -> None:
        self.torch = torch
        hidden, classes = params["W2"].shape
        self.W1 = torch.tensor(params["W1"], device=device)
        self.W2 = torch.tensor(params["W2"], device=device)
        self.batch = int(batch)
        dt = self.W1.dtype
        self.h = torch.empty((batch, hidden), dtype=dt, device=device)
        self.z = torch.empty((batch, classes), dtype=dt, device=device)
        self.dh = torch.empty((batch, hidden), dtype=dt, device=device)
        self.g1 = torch.empty_like(self.W1)
        self.g2 = torch.empty_like(self.W2)

    def run(self, X: Any, y: Any) -> None:
        mm = self.torch.mm
        W1, W2, g1, g2 = self.W1, self.W2, self.g1, self.g2
        for lo, hi in _batches(X.shape[0], self.batch):
            xb, k = X[lo:hi], hi - lo
            h, z, dh = self.h[:k], self.z[:k], self.dh[:k]
            mm(xb, W1, out=h)
            mm(h, W2, out=z)
            mm(z, W2.T, out=dh)
            mm(h.T, z, out=g2)
            mm(xb.T, dh, out=g1)


# --- any array-API namespace (array-api-strict) ------------------------------------------------


class ArrayAPIFloor:
    """The floor in standard array-API calls only (for array-api-strict, which has no ``out=``
    and no integer-array indexing)."""

    name = "floor"

    def __init__(self, xp: Any, device: Any, params: Params, batch: int, lr: float,
                 seed: int, reg: float = 0.0) -> None:
        self.xp, self.device = xp, device
        t = {k: xp.asarray(v, device=device, copy=True) for k, v in params.items()}
        self.W1, self.b1, self.W2, self.b2 = t["W1"], t["b1"], t["W2"], t["b2"]
        self.batch, self.lr, self.reg = int(batch), float(lr), float(reg)
        self.rng = np.random.default_rng(seed)
        self.classes = xp.arange(params["W2"].shape[1], dtype=xp.int64, device=device)

    def run(self, X: Any, y: Any) -> None:
        xp, lr = self.xp, self.lr
        W1, b1, W2, b2 = self.W1, self.b1, self.W2, self.b2
        n = X.shape[0]
        perm = xp.asarray(self.rng.permutation(n), device=self.device)
        for lo, hi in _batches(n, self.batch):
            idx, k = perm[lo:hi], hi - lo
            xb, yb = xp.take(X, idx, axis=0), xp.take(y, idx, axis=0)
            h = xp.maximum(xb @ W1 + b1, 0.0)
            z = h @ W2 + b2
            e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
            onehot = xp.astype(yb[:, None] == self.classes, z.dtype)
            dz = (e / xp.sum(e, axis=1, keepdims=True) - onehot) * (lr / k)
            dh = xp.where(h > 0, dz @ W2.T, 0.0)
            if self.reg:
                W2 *= 1.0 - lr * self.reg
                W1 *= 1.0 - lr * self.reg
            W2 -= h.T @ dz
            b2 -= xp.sum(dz, axis=0)
            W1 -= xb.T @ dh
            b1 -= xp.sum(dh, axis=0)


class ArrayAPILimit:
    """The five matrix products in standard array-API calls (no preallocated outputs)."""

    name = "limit"

    def __init__(self, xp: Any, device: Any, params: Params, batch: int) -> None:
        self.xp = xp
        self.W1 = xp.asarray(params["W1"], device=device)
        self.W2 = xp.asarray(params["W2"], device=device)
        self.batch = int(batch)

    def run(self, X: Any, y: Any) -> None:
        W1, W2 = self.W1, self.W2
        for lo, hi in _batches(X.shape[0], self.batch):
            xb = X[lo:hi, :]
            h = xb @ W1
            z = h @ W2
            dh = z @ W2.T
            _ = h.T @ z
            _ = xb.T @ dh


# --- PyTorch the usual way (torch.nn + torch.optim.SGD) ------------------------------------------


class TorchReference:
    """PyTorch with the same model, initial weights and hyperparameters, the usual way."""

    name = "torch"

    def __init__(self, torch: Any, device: Any, params: Params, batch: int, lr: float,
                 seed: int, reg: float = 0.0) -> None:
        self.torch, self.device = torch, device
        fan_in, hidden = params["W1"].shape
        classes = params["W2"].shape[1]
        nn = torch.nn
        self.net = nn.Sequential(
            nn.Linear(fan_in, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        ).to(device)
        with torch.no_grad():  # nn.Linear keeps W as (out, in)
            self.net[0].weight.copy_(torch.tensor(params["W1"].T.copy()))
            self.net[0].bias.copy_(torch.tensor(params["b1"]))
            self.net[2].weight.copy_(torch.tensor(params["W2"].T.copy()))
            self.net[2].bias.copy_(torch.tensor(params["b2"]))
        weights = [self.net[0].weight, self.net[2].weight]
        biases = [self.net[0].bias, self.net[2].bias]
        self.opt = torch.optim.SGD([{"params": weights, "weight_decay": float(reg)},
                                    {"params": biases, "weight_decay": 0.0}], lr=float(lr))
        self.batch = int(batch)
        self.gen = torch.Generator().manual_seed(seed)

    def run(self, X: Any, y: Any) -> None:
        torch = self.torch
        cross_entropy = torch.nn.functional.cross_entropy
        net, opt = self.net, self.opt
        n = X.shape[0]
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        for lo, hi in _batches(n, self.batch):
            idx = perm[lo:hi]
            opt.zero_grad(set_to_none=True)
            loss = cross_entropy(net(X.index_select(0, idx)), y.index_select(0, idx))
            loss.backward()
            opt.step()


# --- per-sample SGD, plain NumPy (the reference program's floor) ---------------------------------


PER_SAMPLE_FLOOR_METHOD = (
    "per sample: z = W @ x + b, p = softmax(z), g = 2 (p - onehot), dz = p * (g - g.p), "
    "W -= lr * outer(dz, x), b -= lr * dz; x = X[i] for i in one permutation per epoch"
)


class PerSampleNumpyFloor:
    """Per-sample SGD of the one-layer 784->10 model with softmax squared error, plain NumPy.

    Per sample: ``z = W @ x + b``, ``p = softmax(z)``, ``g = 2 (p - onehot)``,
    ``dz = p * (g - g.p)`` (through the full softmax Jacobian), ``W -= lr * outer(dz, x)``,
    ``b -= lr * dz``. One permutation per epoch; each sample is the row ``X[i]`` (a view).
    """

    name = "plain numpy inline"

    def __init__(self, W: np.ndarray, b: np.ndarray, lr: float, seed: int) -> None:
        self.W = np.array(W.T)  # (10, 784), as the reference program holds it
        self.b = np.array(b)
        self.lr = float(lr)
        self.rng = np.random.default_rng(seed)

    def run(self, X: np.ndarray, y: np.ndarray) -> None:
        W, b, lr = self.W, self.b, self.lr
        exp, outer = np.exp, np.outer
        labels = y.tolist()
        for i in self.rng.permutation(X.shape[0]).tolist():
            x, t = X[i], labels[i]
            z = W @ x
            z += b
            z -= z.max()
            p = exp(z)
            p /= p.sum()
            g = p * 2.0
            g[t] -= 2.0                     # dL/dp = 2 (p - onehot)
            dz = p * (g - g @ p)            # dL/dz through the softmax Jacobian
            dz *= lr
            W -= outer(dz, x)
            b -= dz


FULL_BATCH_FLOOR_METHOD = (
    "full batch, float64: Z1 = X @ W1 + b1, A1 = relu(Z1), Z2 = A1 @ W2 + b2, dZ2 = "
    "(softmax(Z2) - onehot) * (alpha / m), dZ1 = (dZ2 @ W2.T) * (Z1 > 0), W -= A.T @ dZ, "
    "b -= sum(dZ); products into buffers allocated once, in place where NumPy allows"
)


class FullBatchNumpyFloor:
    """Full-batch gradient descent of the 784-10-10 ReLU net (reference B), plain NumPy: the
    fastest transcription of the reference notebook's iteration (per-unit bias gradients, the
    learning rate folded into the output gradient, products into reused buffers)."""

    name = "plain numpy"

    def __init__(self, params: Params, X: np.ndarray, y: np.ndarray, lr: float) -> None:
        self.W1, self.b1 = np.array(params["W1"]), np.array(params["b1"])
        self.W2, self.b2 = np.array(params["W2"]), np.array(params["b2"])
        self.X, self.lr = X, float(lr)
        m, hidden, classes = X.shape[0], self.W1.shape[1], self.W2.shape[1]
        self.onehot = np.zeros((m, classes), dtype=X.dtype)
        self.onehot[np.arange(m), y] = 1.0
        self.h = np.empty((m, hidden), dtype=X.dtype)
        self.z = np.empty((m, classes), dtype=X.dtype)
        self.dh = np.empty((m, hidden), dtype=X.dtype)

    def run(self, iterations: int) -> None:
        X, W1, b1, W2, b2, h, z, dh = (self.X, self.W1, self.b1, self.W2, self.b2, self.h,
                                       self.z, self.dh)
        scale = self.lr / X.shape[0]
        for _ in range(iterations):
            np.matmul(X, W1, out=h)
            h += b1
            np.maximum(h, 0.0, out=h)
            np.matmul(h, W2, out=z)
            z += b2
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            z -= self.onehot
            z *= scale                                   # alpha * dZ2
            np.matmul(z, W2.T, out=dh)
            dh *= h > 0                                  # alpha * dZ1
            W2 -= h.T @ z
            b2 -= z.sum(axis=0)
            W1 -= X.T @ dh
            b1 -= dh.sum(axis=0)
