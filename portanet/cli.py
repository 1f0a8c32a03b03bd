"""The ``portanet`` command: train, evaluate, predict, info, data.

    portanet train                       # MNIST, the 'best' preset, best available backend
    portanet train --model mlp1024 --backend numpy --epochs 8 --save mlp.npz
    portanet evaluate mlp.npz
    portanet predict mlp.npz my_digit.png --json
    portanet info
    portanet data mnist --verify
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import portanet
from portanet import datasets, metrics
from portanet._files import atomic_write
from portanet.backend import (
    BACKEND_NAMES,
    BackendUnavailableError,
    cuda_device_label,
    cuda_status,
)
from portanet.recipes import DEFAULT_PRESET, OPTIMIZERS, PRESETS, Recipe, get_recipe
from portanet.train import Callback, History

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
DATASET_CHOICES = ("mnist", "fashion")


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


# --- progress -----------------------------------------------------------------------------------


class ProgressBar(Callback):
    """A one-line progress bar per epoch with running loss and accuracy (on a terminal only),
    and one summary line per epoch."""

    def __init__(self, stream: TextIO, bar: bool, epochs_total: int) -> None:
        self.stream = stream
        self.bar = bar
        self.epochs_total = epochs_total
        self._last_draw = 0.0

    def on_epoch_begin(self, epoch: int, epochs: int, num_batches: int) -> None:
        self.epoch, self.num_batches = epoch, num_batches
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def on_batch_end(self, batch: int, running: Any) -> None:
        now = time.perf_counter()
        if not self.bar or (now - self._last_draw < 0.25 and batch + 1 < self.num_batches):
            return
        self._last_draw = now
        loss, accuracy = running()  # reads the device: only a few times a second
        done = (batch + 1) / self.num_batches
        filled = int(done * 30)
        self.stream.write(
            f"\r  epoch {self.epoch + 1}/{self.epochs_total} [{'#' * filled}{'.' * (30 - filled)}]"
            f" {done:4.0%}  loss {loss:.4f}  accuracy {accuracy:.2%}  {now - self._start:5.1f}s"
        )
        self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.bar:
            self.stream.write("\r" + " " * 100 + "\r")
        line = (f"epoch {epoch + 1:>3}/{self.epochs_total}  loss {logs['loss']:.4f}  "
                f"train {logs['accuracy']:.2%}")
        if "val_accuracy" in logs:
            line += f"  val {logs['val_accuracy']:.2%}"
        line += (f"  lr {logs['lr']:.4g}  {logs['seconds']:.1f}s  "
                 f"{logs['samples_per_second']:,.0f} samples/s")
        print(line, flush=True)


# --- data -------------------------------------------------------------------------------------


def load_data(
    dataset: str, data_dir: str | None, dataset_file: str | None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train and test splits as host arrays, from the verified loaders or a user's ``.npz``."""
    if dataset_file:
        return _load_npz(Path(dataset_file))
    loader = datasets.load_mnist if dataset == "mnist" else datasets.load_fashion_mnist
    return loader(data_dir)


def _load_npz(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A user's own data: ``x_train, y_train, x_test, y_test``, 28x28 uint8 images."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except FileNotFoundError:
        raise UsageError(f"no dataset file at {path}") from None
    except KeyError as exc:
        raise UsageError(f"{path} lacks the array {exc}; it needs x_train, y_train, x_test, "
                         f"y_test") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable .npz file: {exc}") from None
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def class_names(dataset: str) -> list[str]:
    return list(FASHION_CLASSES) if dataset == "fashion" else [str(d) for d in range(10)]


# --- train ------------------------------------------------------------------------------------


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    recipe = get_recipe(args.model)
    hidden = None
    if args.hidden is not None:
        try:
            hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
        except ValueError:
            raise UsageError(f"--hidden takes widths like 512,256, got {args.hidden!r}") from None
    batch_size: Any = None
    if args.batch_size is not None:
        if args.batch_size == "full":
            batch_size = "full"
        else:
            try:
                batch_size = int(args.batch_size)
            except ValueError:
                raise UsageError(f"--batch-size takes a number or 'full', got "
                                 f"{args.batch_size!r}") from None
    try:
        recipe = recipe.replace(
            hidden=hidden, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
            weight_decay=args.weight_decay, dropout=args.dropout,
            batch_size=None if batch_size == "full" else batch_size,
        )
        if batch_size == "full":
            recipe = dataclasses.replace(recipe, batch_size=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    return recipe


def cmd_train(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    backend = portanet.get_backend(args.backend, args.dtype, seed=args.seed)
    print(f"backend: {backend.name} on {backend.device_name} ({backend.dtype_name}); "
          f"{backend.note}")
    (x_train, y_train), (x_test, y_test) = load_data(args.dataset, args.data_dir,
                                                     args.dataset_file)
    if recipe.train_subset:
        x_train, y_train = x_train[:recipe.train_subset], y_train[:recipe.train_subset]
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    validation = None
    if args.validation:
        if args.validation >= len(x_train):
            raise UsageError(f"--validation {args.validation} leaves no training images "
                             f"(there are {len(x_train)})")
        x_val, y_val = x_train[-args.validation:], y_train[-args.validation:]
        x_train, y_train = x_train[:-args.validation], y_train[:-args.validation]
        x_dev, y_dev = datasets.to_device(x_val, y_val, backend)
        validation = (images_as(x_dev, recipe.input_shape), y_dev)
    X, y = datasets.to_device(x_train, y_train, backend)
    X_test, y_test_dev = datasets.to_device(x_test, y_test, backend)
    X, X_test = images_as(X, recipe.input_shape), images_as(X_test, recipe.input_shape)
    classes = 10
    model = recipe.build(backend, seed=args.seed, in_features=X.shape[1], classes=classes,
                         dtype=args.dtype)
    print(f"data: {args.dataset_file or args.dataset}, {X.shape[0]:,} training, "
          f"{0 if validation is None else validation[0].shape[0]:,} validation, "
          f"{X_test.shape[0]:,} test images")
    print(f"model '{recipe.name}': {model!r}, {model.num_parameters():,} parameters")
    fit_args = recipe.fit_arguments(samples=X.shape[0])
    print(f"training: {recipe.optimizer} lr {recipe.lr} ({recipe.schedule}), "
          f"batch {recipe.batch_size or 'full'}, {recipe.epochs} epochs"
          + (f", dropout {recipe.dropout}" if recipe.dropout else "")
          + (f", L2 {recipe.l2}" if recipe.l2 else "")
          + (f", weight decay {recipe.weight_decay}" if recipe.weight_decay else ""))
    progress = ProgressBar(sys.stderr, bar=not args.quiet and sys.stderr.isatty(),
                           epochs_total=recipe.epochs)
    started = time.perf_counter()
    history = portanet.fit(model, X, y, validation_data=validation,
                           callbacks=[] if args.quiet else [progress], **fit_args)
    train_seconds = time.perf_counter() - started
    if history.interrupted:
        print(f"interrupted: stopped after {history.epochs} epoch(s); finishing the report",
              flush=True)
    if args.quiet:
        _print_last_epoch(history)
    report = report_for(model, X_test, y_test_dev, args.dataset)
    print()
    print(metrics.format_report(report))
    samples = X.shape[0] * history.epochs
    print(f"\ntest accuracy {report['accuracy']:.2%} on {report['num_samples']:,} images; "
          f"trained {train_seconds:.1f}s ({samples / max(train_seconds, 1e-9):,.0f} samples/s) "
          f"on {backend.name}")
    config = {"command": "train", "dataset": args.dataset_file or args.dataset,
              "recipe": recipe.as_dict(), "seed": args.seed, "validation": args.validation,
              "limit": args.limit}
    timings = {"train_seconds": train_seconds,
               "samples_per_second": samples / max(train_seconds, 1e-9),
               "epoch_seconds": history.seconds}
    if args.save:
        path = portanet.save(model, args.save, dataset=args.dataset, recipe=recipe.as_dict(),
                             test_accuracy=report["accuracy"])
        print(f"model saved to {path}")
    out = Path(args.out) if args.out else default_out_dir(args.dataset, recipe.name)
    write_outputs(out, model, report, config, timings, history, X_test, y_test, x_test,
                  args.dataset)
    return 130 if history.interrupted else 0


def images_as(x: Any, shape: tuple[int, ...] | None) -> Any:
    """Flat device images (N, 784) in a model's per-sample shape, e.g. (N, 1, 28, 28) for a
    CNN; unchanged for flat shapes or an unknown one."""
    if shape is None or len(shape) < 2:
        return x
    import array_api_compat

    return array_api_compat.array_namespace(x).reshape(x, (x.shape[0], *shape))


def _print_last_epoch(history: History) -> None:
    if history.epochs:
        print(f"trained {history.epochs} epochs: loss {history.loss[-1]:.4f}, "
              f"train accuracy {history.accuracy[-1]:.2%}")


def report_for(model: portanet.Sequential, X_test: Any, y_test: Any, dataset: str
               ) -> dict[str, Any]:
    predicted = model.backend.to_numpy(portanet.predict(model, X_test))
    labels = model.backend.to_numpy(y_test)
    return metrics.classification_report(labels, predicted, num_classes=10,
                                         class_names=class_names(dataset))


def default_out_dir(dataset: str, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{dataset}-{name}"


def environment(model: portanet.Sequential) -> dict[str, Any]:
    import array_api_compat

    env = {"portanet": portanet.__version__, "python": platform.python_version(),
           "numpy": np.__version__, "array_api_compat": array_api_compat.__version__,
           "platform": platform.platform(), "backend": model.backend.name,
           "device": model.backend.device_name, "dtype": model.backend.dtype_name}
    if model.backend.name == "cupy":
        import cupy

        env["cupy"] = cupy.__version__
    return env


def write_outputs(
    out: Path, model: portanet.Sequential, report: dict[str, Any], config: dict[str, Any],
    timings: dict[str, Any], history: History | None, X_test: Any, y_test: np.ndarray,
    images: np.ndarray, dataset: str,
) -> None:
    """report.json plus PNG pictures (when Matplotlib is installed) in ``out``."""
    document = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config, "environment": environment(model), "timings": timings,
        "history": history.as_dict() if history else None, "report": report,
    }
    atomic_write(out / "report.json",
                 lambda f: f.write(json.dumps(document, indent=2).encode("utf-8")))
    written = [out / "report.json"]
    from portanet import plots

    available, why = plots.plotting_available()
    if not available:
        print(f"report written to {out / 'report.json'}; no pictures: {why}")
        return
    if history is not None and history.epochs:
        written.append(plots.plot_learning_curves(history.as_dict(), out / "learning_curves.png"))
    written.append(plots.plot_confusion_matrix(np.asarray(report["confusion_matrix"]),
                                               out / "confusion_matrix.png",
                                               class_names=class_names(dataset)))
    proba = model.backend.to_numpy(portanet.predict_proba(model, X_test))
    written.append(plots.plot_misclassified(images, y_test, proba.argmax(axis=1), proba,
                                            out / "misclassified.png",
                                            class_names=class_names(dataset)))
    print("written: " + ", ".join(str(p) for p in written))


# --- evaluate / predict --------------------------------------------------------------------


def _load_model(path: str, backend: str | None, dtype: str | None) -> portanet.Sequential:
    try:
        return portanet.load(path, backend=backend, dtype=dtype)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = _load_model(args.model_path, args.backend, args.dtype)
    meta = portanet.io.load_metadata(args.model_path)
    dataset = args.dataset or meta.get("extra", {}).get("dataset") or "mnist"
    print(f"model {args.model_path}: {model!r} on {model.backend.name} "
          f"({model.backend.device_name})")
    _, (x_test, y_test) = load_data(dataset, args.data_dir, args.dataset_file)
    if args.limit:
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    X_test, y_dev = datasets.to_device(x_test, y_test, model.backend)
    X_test = images_as(X_test, model.input_shape)
    started = time.perf_counter()
    report = report_for(model, X_test, y_dev, dataset)
    seconds = time.perf_counter() - started
    print(metrics.format_report(report))
    print(f"\ntest accuracy {report['accuracy']:.2%} on {report['num_samples']:,} images "
          f"({seconds:.2f}s)")
    if args.out:
        write_outputs(Path(args.out), model, report,
                      {"command": "evaluate", "model": args.model_path, "dataset": dataset},
                      {"evaluate_seconds": seconds}, None, X_test, y_test, x_test, dataset)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from portanet import images

    model = _load_model(args.model_path, args.backend, None)
    dataset = portanet.io.load_metadata(args.model_path).get("extra", {}).get("dataset")
    names = class_names(dataset or "mnist")
    failures = 0
    for path in args.images:
        try:
            digit = images.load_digit(path)
        except (ValueError, FileNotFoundError, OSError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        shape = model.input_shape if model.input_shape else (-1,)
        proba = portanet.predict_proba(model, digit.reshape(1, *shape))[0]  # host in, host out
        top = np.argsort(proba)[::-1][:3]
        if args.json:
            print(json.dumps({"path": str(path), "top3": [
                {"digit": int(k), "label": names[k], "probability": round(float(proba[k]), 6)}
                for k in top]}))
        else:
            guesses = ", ".join(f"{names[k]} ({proba[k]:.1%})" for k in top)
            print(f"{path}: {guesses}")
    return 1 if failures else 0


# --- info -------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    import importlib.metadata
    import importlib.util
    import os

    import array_api_compat

    print(f"portanet {portanet.__version__} (Python {platform.python_version()}, "
          f"NumPy {np.__version__}, array-api-compat {array_api_compat.__version__})")
    print(f"default backend: {os.environ.get('PORTANET_BACKEND') or 'auto'}"
          + (" (from PORTANET_BACKEND)" if os.environ.get("PORTANET_BACKEND") else ""))
    print("backends:")
    print("  numpy             available (CPU)")
    usable, why = cuda_status()
    if usable:
        import cupy

        gpus = [cuda_device_label(i) for i in range(cupy.cuda.runtime.getDeviceCount())]
        print(f"  cupy              available, CuPy {cupy.__version__}: " + "; ".join(gpus))
    else:
        print(f"  cupy              unavailable: {why}")
    for module, package in (("array_api_strict", "array-api-strict"), ("torch", "torch")):
        if importlib.util.find_spec(module) is None:
            print(f"  {module:<17} unavailable: not installed (pip install {package})")
        else:
            print(f"  {module:<17} available, {importlib.metadata.version(package)}")
    print(f"auto picks: {'cupy' if usable else 'numpy'}")
    blas = os.environ.get("OPENBLAS_CORETYPE")
    if blas:
        print(f"OPENBLAS_CORETYPE={blas} (forces OpenBLAS kernels; unset it for the CPU's own)")
    return 0


# --- argument parsing ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portanet", description="Train and use small neural networks on NumPy or CuPy.")
    parser.add_argument("--version", action="version", version=f"portanet {portanet.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def backend_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", choices=[b for b in BACKEND_NAMES], default=None,
                       help="array backend (default: $PORTANET_BACKEND, else auto: CuPy on a "
                            "usable GPU, else NumPy)")

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="folder with the dataset files (else PORTANET_DATA, "
                                          "the cache, or a download)")
        p.add_argument("--dataset-file", help="your own .npz with x_train, y_train, x_test, "
                                              "y_test (28x28 uint8 images)")
        p.add_argument("--limit", type=int, default=0,
                       help="use only the first N training and test images (quick runs)")

    train = sub.add_parser("train", help="train a classifier (MNIST by default)")
    train.add_argument("--dataset", choices=DATASET_CHOICES, default="mnist")
    train.add_argument("--model", choices=list(PRESETS), default=DEFAULT_PRESET,
                       help=f"preset (default {DEFAULT_PRESET}): " + "; ".join(
                           f"{k}: {v.description}" for k, v in PRESETS.items()))
    train.add_argument("--hidden", help="hidden layer widths, e.g. 512,256 (overrides the preset)")
    backend_option(train)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", help="samples per step, or 'full' for full-batch descent")
    train.add_argument("--lr", type=float, help="learning rate")
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--dropout", type=float, help="dropout after each hidden layer")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--validation", type=int, default=5000,
                       help="hold out the last N training images for validation (0: none)")
    train.add_argument("--save", help="save the trained model to this .npz file")
    train.add_argument("--out", help="folder for report.json and the pictures "
                                     "(default runs/DATE-DATASET-MODEL)")
    train.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    data_options(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="the test report of a saved model")
    evaluate.add_argument("model_path", metavar="MODEL")
    evaluate.add_argument("--dataset", choices=DATASET_CHOICES,
                          help="default: the dataset the model was trained on")
    backend_option(evaluate)
    evaluate.add_argument("--dtype", choices=("float32", "float64"))
    evaluate.add_argument("--out", help="folder for report.json and the pictures")
    data_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser("predict", help="classify your own images (PNG/JPEG)")
    predict.add_argument("model_path", metavar="MODEL")
    predict.add_argument("images", metavar="IMAGE", nargs="+")
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    backend_option(predict)
    predict.set_defaults(func=cmd_predict)

    info = sub.add_parser("info", help="version, backends and GPUs")
    info.set_defaults(func=cmd_info)

    data = sub.add_parser("data", help="fetch, verify and locate MNIST / Fashion-MNIST")
    datasets.add_data_arguments(data)
    data.set_defaults(func=datasets.run_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``portanet`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (UsageError, BackendUnavailableError, datasets.DatasetUnavailableError) as exc:
        print(f"portanet {args.command}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"portanet {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nportanet {args.command}: interrupted", file=sys.stderr)
        return 130
