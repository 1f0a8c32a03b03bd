"""The same program as :mod:`bench.programs.mlp_numpy`, written with portanet.

    python -m bench.programs.mlp_portanet DATA.npz EPOCHS
"""

import sys

import numpy as np

import portanet as pn


def main(path: str, epochs: int) -> None:
    data = np.load(path)
    X = data["x_train"].astype(np.float32) / np.float32(255.0)
    X_test = data["x_test"].astype(np.float32) / np.float32(255.0)
    model = pn.Sequential([pn.Dense(784, 1024), pn.ReLU(), pn.Dense(1024, 10)],
                          backend="numpy", seed=0)
    pn.fit(model, X, data["y_train"], optimizer=pn.optim.SGD(0.5), l2=1e-4, epochs=epochs,
           batch_size=256, validation_data=(X_test, data["y_test"]), verbose=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
