import sys

import numpy as np
import pytest

from portanet.app import plots

available, reason = plots.plotting_available()
needs_matplotlib = pytest.mark.skipif(not available, reason=reason)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size=(200, 100)):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow not installed")
    with image_mod.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], im.size
        assert im.size[0] <= 4000 and im.size[1] <= 4000, im.size
        im.load()
    # Nothing but the pictures is left next to the result: no temporary file, whatever its name.
    assert [p.name for p in path.parent.iterdir() if p.suffix != ".png"] == []


def digits(n, seed=0):
    rng = np.random.default_rng(seed)
    imgs = np.zeros((n, 28, 28), dtype=np.float32)
    for k in range(n):
        top, left = rng.integers(4, 8, size=2)
        imgs[k, top : top + 20, left + 8 : left + 12] = 1.0  # a "1"
    return imgs


def test_plotting_available_reports_a_reason():
    ok, why = plots.plotting_available()
    assert isinstance(ok, bool) and isinstance(why, str)
    assert ok or 'pip install "portanet[plot]"' in why


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    ok, why = plots.plotting_available()
    assert not ok and 'pip install "portanet[plot]"' in why
    with pytest.raises(ImportError, match=r"portanet\[plot\]"):
        plots.plot_confusion_matrix(np.eye(2, dtype=int), tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()


@needs_matplotlib
def test_learning_curves(tmp_path):
    history = {
        "loss": [0.9, 0.5, 0.3, 0.25],
        "accuracy": [0.7, 0.85, 0.9, 0.92],
        "val_loss": [0.8, 0.55, 0.4, 0.42],
        "val_accuracy": [0.72, 0.83, 0.88, 0.87],
    }
    out = plots.plot_learning_curves(history, tmp_path / "new" / "dir" / "curves.png")
    assert out == tmp_path / "new" / "dir" / "curves.png"
    assert_png(out, min_size=(800, 300))


@needs_matplotlib
def test_learning_curves_without_validation(tmp_path):
    out = plots.plot_learning_curves(
        {"loss": [1.0, 0.5], "accuracy": [0.5, 0.8], "val_loss": [], "val_accuracy": []},
        str(tmp_path / "train_only.png"),
    )
    assert_png(out)
    assert_png(plots.plot_learning_curves({"loss": [1.0]}, tmp_path / "loss_only.png"))
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.plot_learning_curves({"accuracy": [0.5]}, tmp_path / "bad.png")


@needs_matplotlib
def test_confusion_matrix(tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 20, size=(10, 10))
    cm[np.arange(10), np.arange(10)] = rng.integers(900, 1100, size=10)
    assert_png(plots.plot_confusion_matrix(cm, tmp_path / "cm.png"), min_size=(500, 500))
    names = [f"class {i}" for i in range(3)]
    assert_png(
        plots.plot_confusion_matrix(
            np.array([[5, 1, 0], [0, 4, 2], [1, 0, 6]]), tmp_path / "n.png", names
        )
    )
    assert_png(plots.plot_confusion_matrix(np.zeros((2, 2)), tmp_path / "zeros.png"))


@needs_matplotlib
def test_confusion_matrix_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plots.plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="class_names has 2 entries"):
        plots.plot_confusion_matrix(np.eye(3), tmp_path / "x.png", ["a", "b"])
    with pytest.raises(ValueError, match="non-negative"):
        plots.plot_confusion_matrix(-np.eye(3), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


@needs_matplotlib
def test_misclassified_grid(tmp_path):
    n = 40
    imgs = digits(n)
    y_true = np.ones(n, dtype=int)
    y_pred = np.where(np.arange(n) % 3 == 0, 7, 1)
    conf = np.linspace(0.3, 0.99, n)
    out = plots.plot_misclassified(imgs, y_true, y_pred, conf, tmp_path / "mis.png", n=25)
    assert_png(out, min_size=(400, 300))
    # Flat uint8 images, (N, K) probabilities and class names work too.
    probs = np.full((n, 10), 0.01)
    probs[np.arange(n), y_pred] = conf
    flat = (imgs.reshape(n, 784) * 255).astype(np.uint8)
    names = [f"digit {i}" for i in range(10)]
    out = plots.plot_misclassified(flat, y_true, y_pred, probs, tmp_path / "m2.png", 4, names)
    assert_png(out)


@needs_matplotlib
def test_misclassified_none(tmp_path):
    y = np.arange(10) % 10
    out = plots.plot_misclassified(digits(10), y, y, np.ones(10), tmp_path / "none.png")
    assert_png(out)


@needs_matplotlib
def test_misclassified_bad_input(tmp_path):
    y = np.zeros(5, dtype=int)
    with pytest.raises(ValueError, match="lengths differ"):
        plots.plot_misclassified(digits(5), y, y[:4], np.ones(5), tmp_path / "x.png")
    with pytest.raises(ValueError, match="confidence must be"):
        plots.plot_misclassified(digits(5), y, y + 1, np.ones(4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="n must be at least 1"):
        plots.plot_misclassified(digits(5), y, y + 1, np.ones(5), tmp_path / "x.png", n=0)
    with pytest.raises(ValueError, match="square number of pixels"):
        plots.plot_misclassified(np.zeros((5, 780)), y, y + 1, np.ones(5), tmp_path / "x.png")


@needs_matplotlib
def test_write_is_atomic_and_overwrites(tmp_path, monkeypatch):
    target = tmp_path / "cm.png"
    target.write_bytes(b"old")
    plots.plot_confusion_matrix(np.eye(3, dtype=int), target)
    assert target.read_bytes()[:8] == PNG_SIGNATURE

    # If saving fails half-way, the old file is untouched and no temporary file remains.
    from matplotlib.figure import Figure

    def broken_savefig(self, file, **kwargs):
        file.write(b"partial")
        raise RuntimeError("disk full")

    before = target.read_bytes()
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_confusion_matrix(np.eye(3, dtype=int), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]


@needs_matplotlib
def test_no_pyplot_global_state(tmp_path):
    plots.plot_confusion_matrix(np.eye(2, dtype=int), tmp_path / "a.png")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # imported by someone else: we must not have left figures open
        assert pyplot.get_fignums() == []
