"""``portanet train``: train a preset (or a recipe changed by options) on MNIST or
Fashion-MNIST, report on the test split, save the model and the pictures.

    portanet train                       # the default preset, best available backend
    portanet train --model cnn --epochs 12 --save cnn.npz
    portanet train --model cnn-best --ensemble 5 --save five.npz
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import portanet
from portanet import data
from portanet.app import arg_types, cli_exit, recipes
from portanet.app.cli_data import DATASET_HELP, data_options
from portanet.app.mpi_launch import abort_on_error, command_line_world
from portanet.app.progress import EpochProgress
from portanet.app.report import (
    default_out_dir,
    make_report,
    print_report,
    print_written,
    write_report,
)
from portanet.app.run_data import Splits, check_labels, held_out, load_data, on_device
from portanet.files import DiskFullError
from portanet.parallel import mpi
from portanet.train import DivergedError, History


def add_train(sub: Any) -> None:
    """Declare ``portanet train`` and its arguments on the subparsers ``sub``."""
    train = sub.add_parser("train", help="train a classifier (MNIST by default)")
    train.add_argument("--dataset", choices=data.dataset_names(), default="mnist",
                       metavar="NAME", help=DATASET_HELP + " (default: mnist)")
    train.add_argument("--model", choices=[*recipes.PRESETS, *recipes.OLD_NAMES],
                       default=recipes.DEFAULT_PRESET, metavar="PRESET",
                       help=f"preset (default {recipes.DEFAULT_PRESET}): " + "; ".join(
                           f"{k}: {v.description}" for k, v in recipes.PRESETS.items())
                       + "; " + "; ".join(f"{old}: the old name of {new}"
                                          for old, new in recipes.OLD_NAMES.items()))
    # Options that change the preset default to KEEP: not given, the preset's value stays.
    train.add_argument("--hidden", type=arg_types.hidden, default=recipes.KEEP,
                       help="hidden layer widths, e.g. 512,256 (overrides the preset)")
    arg_types.backend_option(train)
    train.add_argument("--epochs", type=arg_types.count, default=recipes.KEEP)
    train.add_argument("--batch-size", type=arg_types.batch_size,
                       default=recipes.KEEP,
                       help="samples per step, or 'full' for full-batch descent")
    train.add_argument("--lr", type=arg_types.finite_positive, default=recipes.KEEP,
                       help="learning rate")
    train.add_argument("--optimizer", choices=recipes.OPTIMIZERS, default=recipes.KEEP)
    train.add_argument("--weight-decay", type=arg_types.finite_non_negative, default=recipes.KEEP)
    train.add_argument("--dropout", type=arg_types.dropout, default=recipes.KEEP,
                       help="dropout after each hidden layer")
    train.add_argument("--seed", type=arg_types.count, default=0)
    train.add_argument("--ensemble", type=arg_types.positive_count, default=1, metavar="K",
                       help="train K models (seeds SEED, SEED+1, ...) and keep one file that "
                            "averages their probabilities (default 1: one model)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--validation", type=arg_types.count, default=5000,
                       help="hold out the last N training images for validation (0: none)")
    train.add_argument("--save", type=arg_types.path,
                       help="save the trained model to this .npz file (an interrupted run "
                            "keeps an existing one and saves beside it, as NAME.interrupted.npz)")
    train.add_argument("--overwrite-interrupted", action="store_true",
                       help="with --save: an interrupted run (Ctrl-C, SIGTERM) replaces an "
                            "existing file too")
    train.add_argument("--out", type=arg_types.path,
                       help="folder for report.json and the pictures (default "
                            "runs/DATE-DATASET-MODEL)")
    train.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    data_options(train)
    train.set_defaults(func=cmd_train)


@abort_on_error  # under mpiexec, one rank's error stops every rank
def cmd_train(args: argparse.Namespace) -> int:
    comm = command_line_world()  # one process unless launched by mpiexec
    if args.model in recipes.OLD_NAMES:
        print(f"note: preset '{args.model}' is now called '{recipes.OLD_NAMES[args.model]}'")
    recipe = recipes.get_recipe(args.model).replace(
        hidden=args.hidden, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, dropout=args.dropout, batch_size=args.batch_size)
    if args.out is None:  # decided now, so that the check below covers it
        args.out = str(default_out_dir(args.dataset_file or data.get_spec(args.dataset).name,
                                       recipe.name))
    arg_types.check_files(args)
    backend = portanet.get_backend(args.backend, args.dtype, seed=args.seed,
                                   per_sample=recipe.batch_size == 1)
    print(f"backend: {backend.name} on {backend.device_name} ({backend.dtype_name}); "
          f"{backend.note}")
    advice = backend.workload_advice(recipe.batch_size)
    if advice:
        print(advice)
    loaded = load_data(args.dataset, dataset_file=args.dataset_file, data_dir=args.data_dir,
                       limit=args.limit, train_subset=recipe.train_subset,
                       validation=args.validation)
    comm.check_same_inputs(*loaded.train)  # under mpiexec: the same images on every rank
    if recipe.network == "mlp":
        arg_types.check_memory((loaded.train[0][0].size, *recipe.hidden, len(loaded.class_names)),
                             np.dtype(args.dtype).itemsize)
    try:
        members = train_members(args, recipe, loaded, backend, comm)
    except DivergedError as exc:  # nothing saved, no report: the weights are not finite
        print(f"portanet train: {exc}", file=sys.stderr)
        return 1
    if not comm.is_root:  # rank 0 alone reports, saves and writes
        return 0
    return finish(args, recipe, loaded, backend.name, members)


@dataclass
class Member:
    """One trained model of a ``portanet train`` run (the only one without ``--ensemble``)."""

    model: portanet.Sequential
    seed: int
    history: History
    seconds: float


def train_members(args: argparse.Namespace, recipe: recipes.Recipe, loaded: Splits,
                  backend: portanet.Backend, comm: mpi.Communicator) -> list[Member]:
    """Train ``--ensemble`` models (seeds ``--seed``, ``--seed`` + 1, ...), each as a run with
    that ``--seed`` alone would, until one is interrupted."""
    members: list[Member] = []
    for k in range(args.ensemble):
        seed = args.seed + k
        if args.ensemble > 1:
            print(f"ensemble member {k + 1} of {args.ensemble}: seed {seed}", flush=True)
            backend = portanet.get_backend(args.backend, args.dtype, seed=seed,
                                           per_sample=recipe.batch_size == 1)
        model = recipe.build(backend, seed=seed, in_features=loaded.train[0][0].size,
                             classes=len(loaded.class_names), dtype=args.dtype)
        check_labels(loaded, model)
        history, seconds = train(model, recipe, loaded, quiet=args.quiet, comm=comm)
        members.append(Member(model, seed, history, seconds))
        if args.ensemble > 1 and comm.is_root and not history.interrupted:
            accuracy = portanet.evaluate(model, *on_device(loaded.test, model))["accuracy"]
            print(f"member {k + 1}: test accuracy {accuracy:.2%}; trained {seconds:.1f}s",
                  flush=True)
        if history.interrupted:
            break
    return members


def combined(recipe: recipes.Recipe, members: list[Member]
             ) -> tuple[portanet.Sequential, list[Member]]:
    """The model a run keeps (:meth:`Recipe.keep`): the ensemble of its finished members (two
    or more), else the one finished member, else the interrupted one; and the members it
    holds."""
    finished = [m for m in members if not m.history.interrupted] or members[-1:]
    return recipe.keep([m.model for m in finished]), finished


def finish(args: argparse.Namespace, recipe: recipes.Recipe, loaded: Splits, backend: str,
           members: list[Member]) -> int:
    """Report on the test split, save the model and write the report (rank 0)."""
    model, kept = combined(recipe, members)
    interrupted = members[-1].history.interrupted
    if args.ensemble > 1 and len(kept) > 1:
        print(f"ensemble of {len(kept)} models (seeds {', '.join(str(m.seed) for m in kept)}):"
              f" their probabilities averaged")
    alone = images_alone_accuracy(recipe, kept, loaded) if recipe.test_shift else None
    seconds = sum(m.seconds for m in members)
    test = held_out(loaded, model)
    report = make_report(model, test)
    if alone is not None:
        report["accuracy_images_alone"] = alone
    rate = len(loaded.train[0]) * sum(m.history.epochs for m in members) / max(seconds, 1e-9)
    print_report(report, f"; trained {seconds:.1f}s ({rate:,.0f} samples/s) on {backend}")
    config = {"command": "train", "dataset": loaded.name, "recipe": recipe.as_dict(),
              "seed": args.seed, "validation": args.validation, "limit": args.limit}
    if len(kept) > 1:
        config["ensemble"] = [m.seed for m in kept]
    timings = {"train_seconds": seconds, "samples_per_second": rate,
               "epoch_seconds": members[-1].history.seconds,
               "member_seconds": [m.seconds for m in members]}
    saved: list[Path] = []
    try:  # the model first: a full disk then costs the pictures, not the model
        if args.save is not None:
            saved.append(save_model(args, model, loaded, recipe.as_dict(), report["accuracy"],
                                    interrupted, seeds=[m.seed for m in kept]))
        print_written(*write_report(Path(args.out), model, report, test, config=config,
                                    timings=timings, history=members[-1].history))
    except DiskFullError as exc:
        exc.kept[:0] = saved
        raise
    return cli_exit.interrupted_status() if interrupted else 0


def images_alone_accuracy(recipe: recipes.Recipe, kept: list[Member], loaded: Splits
                          ) -> float:
    """Test accuracy of the kept network(s) on the images alone, without the recipe's
    shifted views, printed as the line before the report's."""
    plain = recipe.replace(test_shift=0).keep([m.model for m in kept])
    accuracy = portanet.evaluate(plain, *on_device(loaded.test, plain))["accuracy"]
    pixels = f"{recipe.test_shift} pixel{'s' if recipe.test_shift > 1 else ''}"
    print(f"test accuracy {accuracy:.2%} on the images alone; with each image also moved by "
          f"{pixels} up, down, left and right, probabilities averaged (the model kept):")
    return accuracy


def save_model(args: argparse.Namespace, model: portanet.Sequential, loaded: Splits,
               recipe: dict[str, Any], accuracy: float, interrupted: bool,
               seeds: list[int] | None = None) -> Path:
    """Save the trained model to ``--save``; an interrupted run keeps a model already there and
    saves beside it (:func:`arg_types.interrupted_path`) unless ``--overwrite-interrupted``."""
    keep = interrupted and not args.overwrite_interrupted and os.path.exists(args.save)
    path = arg_types.interrupted_path(args.save) if keep else args.save
    saved = portanet.save(model, path, dataset=loaded.dataset,
                          class_names=list(loaded.class_names), recipe=recipe,
                          test_accuracy=accuracy, seeds=seeds or [args.seed])
    if keep:
        print(f"interrupted: kept the existing {args.save}; the part-trained model is saved "
              f"beside it, to {saved} (--overwrite-interrupted replaces it instead)")
    else:
        print(f"model saved to {saved}")
    return saved


def train(model: portanet.Sequential, recipe: recipes.Recipe, loaded: Splits, *, quiet: bool,
          comm: mpi.Communicator | None = None) -> tuple[History, float]:
    """Fit ``model`` on ``loaded`` as ``recipe`` says, with progress lines unless ``quiet``;
    the history and the seconds it took."""
    X, y = on_device(loaded.train, model)
    validation = loaded.validation and on_device(loaded.validation, model)
    print(f"data: {loaded.name}, {len(loaded.train[0]):,} training, "
          f"{len(loaded.validation[0]) if loaded.validation else 0:,} validation, "
          f"{len(loaded.test[0]):,} test images")
    if loaded.note:
        print(f"note: {loaded.note}")
    print(f"model '{recipe.name}': {model!r}, {model.num_parameters():,} parameters")
    print(f"training: {recipe.describe()}")
    arguments = recipe.fit_arguments(samples=len(loaded.train[0]), model=model)
    callbacks = arguments.pop("callbacks", [])
    if not quiet:
        callbacks.append(EpochProgress(sys.stderr, bar=sys.stderr.isatty(),
                                       epochs_total=recipe.epochs))
    started = time.perf_counter()
    history = portanet.fit(model, X, y, validation_data=validation, callbacks=callbacks,
                           comm=comm, **arguments)
    if not history.interrupted:
        recipe.finish(model, X)
    seconds = time.perf_counter() - started
    if validation and history.val_accuracy and not history.interrupted and (
            recipe.average or recipe.recalibrate):
        final = portanet.evaluate(model, *validation, loss=recipe.loss)["accuracy"]
        how = " and ".join(what for what, on in (
            (f"weights averaged (decay {recipe.average})", recipe.average),
            ("BatchNorm statistics recomputed on the training images", recipe.recalibrate))
            if on)
        print(f"{how}: validation accuracy {final:.2%}, the last epoch's "
              f"{history.val_accuracy[-1]:.2%}")
    if history.interrupted:
        print(f"interrupted: stopped after {history.epochs} epoch(s); finishing the report",
              flush=True)
    if quiet and history.epochs:
        print(f"trained {history.epochs} epochs: loss {history.loss[-1]:.4f}, "
              f"train accuracy {history.accuracy[-1]:.2%}")
    return history, seconds
