"""The 784-1024-10 ReLU MLP with L2 1e-4, SGD lr 0.5, batch 256, as a plain NumPy program.

    python -m bench.programs.mlp_numpy DATA.npz EPOCHS

DATA.npz holds uint8 images ``x_train``, ``x_test`` (n, 784) and labels ``y_train``, ``y_test``.
Each step is :class:`bench.workloads.ArrayModuleFloor`'s (the fastest plain NumPy step: one
permutation per epoch, batches gathered by index, lr folded into the output gradient, in place
where NumPy allows); test accuracy is printed after each epoch.
"""

import sys

import numpy as np

from bench.workloads import ArrayModuleFloor


def main(path: str, epochs: int) -> None:
    data = np.load(path)
    X = data["x_train"].astype(np.float32) / np.float32(255.0)
    y = data["y_train"].astype(np.int64)
    X_test = data["x_test"].astype(np.float32) / np.float32(255.0)
    y_test = data["y_test"].astype(np.int64)
    rng = np.random.default_rng(0)
    params = {"W1": (rng.standard_normal((784, 1024)) * np.sqrt(2 / 784)).astype(np.float32),
              "b1": np.zeros(1024, np.float32),
              "W2": (rng.standard_normal((1024, 10)) * np.sqrt(2 / 1024)).astype(np.float32),
              "b2": np.zeros(10, np.float32)}
    net = ArrayModuleFloor(np, params, batch=256, lr=0.5, seed=0, reg=1e-4)
    for epoch in range(epochs):
        net.run(X, y)
        correct = 0
        for lo in range(0, X_test.shape[0], 2048):
            h = np.maximum(X_test[lo:lo + 2048] @ net.W1 + net.b1, 0.0)
            correct += int(np.sum(np.argmax(h @ net.W2 + net.b2, axis=1) == y_test[lo:lo + 2048]))
        print(f"epoch {epoch + 1}: test accuracy {correct / X_test.shape[0]:.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
