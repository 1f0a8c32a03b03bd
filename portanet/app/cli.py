"""The ``portanet`` command: train, evaluate, predict, export, ensemble, draw, info, check,
data.

    portanet train                       # MNIST, the default preset, best available backend
    portanet train --model mlp1024 --backend numpy --epochs 8 --save mlp.npz
    portanet evaluate mlp.npz
    portanet predict mlp.npz my_digit.png --json
    portanet export mlp.npz mlp.onnx
    portanet ensemble a.npz b.npz c.npz --save abc.npz
    portanet draw mlp.npz                # a page to draw on, at http://127.0.0.1:8028/
    portanet info
    portanet check
    portanet data mnist --verify

Each subcommand is a pair: ``add_NAME(subparsers)`` declares its arguments and ``cmd_NAME(args)``
carries them out and returns the exit status; :data:`SUBCOMMANDS` lists the pairs in help order.
``portanet train`` lives in :mod:`portanet.app.cli_train`, ``portanet data`` and the data
options in :mod:`portanet.app.cli_data`, the MPI glue of ``portanet train`` in
:mod:`portanet.app.mpi_launch`.
The work itself lives in the library (:mod:`portanet.data`, :mod:`portanet.app.recipes`,
:mod:`portanet.app.report`, :mod:`portanet.app.progress`); this module only parses and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import portanet
from portanet import data
from portanet.app import arg_types, cli_exit
from portanet.app.cli_data import DATASET_HELP, add_data, data_options
from portanet.app.cli_train import add_train
from portanet.app.report import (
    make_report,
    print_report,
    print_written,
    write_report,
)
from portanet.app.run_data import (
    check_labels,
    held_out,
    load_data,
    saved_labels,
)
from portanet.app.self_check import CheckRow, candidates
from portanet.backend import BACKEND_NAMES, ENV_VAR, BackendUnavailableError, auto_choice
from portanet.backend.table import SEAMS
from portanet.file_checks import check_input_file, check_output_path
from portanet.layers import Ensemble


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


# --- evaluate / predict --------------------------------------------------------------------


def load_model(path: str, backend: str | None, dtype: str | None = None
               ) -> tuple[portanet.Sequential, dict[str, Any]]:
    """A saved model and the extra metadata it was saved with (io checks both)."""
    model = portanet.load(path, backend=backend, dtype=dtype)
    return model, portanet.saving.npz.load_metadata(path)["extra"]


def add_evaluate(sub: Any) -> None:
    evaluate = sub.add_parser("evaluate", help="the test report of a saved model")
    evaluate.add_argument("model_path", metavar="MODEL", type=arg_types.path)
    evaluate.add_argument("--dataset", choices=data.dataset_names(), metavar="NAME",
                          help=DATASET_HELP + " (default: the one the model was trained on)")
    arg_types.backend_option(evaluate)
    evaluate.add_argument("--dtype", choices=("float32", "float64"))
    evaluate.add_argument("--out", type=arg_types.path,
                          help="folder for report.json and the pictures")
    data_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    arg_types.check_files(args)
    model, extra = load_model(args.model_path, args.backend, args.dtype)
    print(f"model {args.model_path}: {model!r} on {model.backend.name} "
          f"({model.backend.device_name})")
    dataset = args.dataset or arg_types.saved_dataset(args.model_path, extra) or "mnist"
    loaded = load_data(dataset, dataset_file=args.dataset_file, data_dir=args.data_dir,
                       limit=args.limit, classes=extra.get("class_names"))
    if loaded.note:
        print(f"note: {loaded.note}")
    check_labels(loaded, model)
    test = held_out(loaded, model)
    started = time.perf_counter()
    report = make_report(model, test)
    seconds = time.perf_counter() - started
    print_report(report, f" ({seconds:.2f}s)")
    if args.out:
        config = {"command": "evaluate", "model": args.model_path, "dataset": loaded.name}
        print_written(*write_report(Path(args.out), model, report, test, config=config,
                                    timings={"evaluate_seconds": seconds}))
    return 0


def add_predict(sub: Any) -> None:
    predict = sub.add_parser("predict", help="classify your own images (PNG/JPEG)")
    predict.add_argument("model_path", metavar="MODEL")
    predict.add_argument("images", metavar="IMAGE", nargs="+")
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    arg_types.backend_option(predict)
    predict.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from portanet.reader.digit import load_digit
    check_input_file(args.model_path, what="the model")
    model, extra = load_model(args.model_path, args.backend)
    names = saved_labels(model, args.model_path, extra)
    failures = 0
    for path in args.images:
        try:
            digit = load_digit(path)
        except (ValueError, FileNotFoundError, OSError) as exc:
            print(exc if str(path) in str(exc) else f"{path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        shape = model.input_shape or (digit.size,)
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


# --- export -----------------------------------------------------------------------------------


def add_export(sub: Any) -> None:
    export = sub.add_parser("export", help="write a saved model as an ONNX file (pip install "
                                           "'portanet[onnx]')")
    export.add_argument("model_path", metavar="MODEL")
    export.add_argument("out", metavar="OUT.onnx")
    export.add_argument("--no-verify", action="store_true",
                        help="skip running the file in onnxruntime against portanet's output")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from portanet.saving.onnx_export import export_saved

    try:
        print(export_saved(args.model_path, args.out, verify=not args.no_verify))
    except ImportError as exc:  # ndonnx or onnxruntime missing: the message has the pip line
        print(f"portanet export: {exc}", file=sys.stderr)
        return 1
    return 0


# --- ensemble ---------------------------------------------------------------------------------


def add_ensemble(sub: Any) -> None:
    ensemble = sub.add_parser("ensemble", help="combine saved models into one file that "
                                               "averages their probabilities")
    ensemble.add_argument("model_paths", metavar="MODEL", nargs="+", type=arg_types.path,
                          help="models saved by portanet train --save (two or more, or one "
                               "with --shift); an ensemble's file gives its members")
    ensemble.add_argument("--shift", type=arg_types.count, default=None, metavar="PIXELS",
                          help="also read each image moved by PIXELS up, down, left and "
                               "right, averaging those views too (0: the image alone; "
                               "default: the shift the ensembles among the files share, else 0)")
    ensemble.add_argument("--save", required=True, type=arg_types.path,
                          help="the .npz file to write")
    ensemble.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args: argparse.Namespace) -> int:
    paths = list(args.model_paths)
    for path in paths:
        check_input_file(path, what="the model file")
    check_output_path(args.save, [(f"the model file {p}", p) for p in paths], what="--save")
    loaded = [load_model(path, "numpy") for path in paths]
    labels = [saved_labels(model, path, extra)
              for path, (model, extra) in zip(paths, loaded, strict=True)]
    for path, names in zip(paths[1:], labels[1:], strict=True):
        if names != labels[0]:
            raise ValueError(f"{path} predicts the classes {', '.join(names)}, {paths[0]} "
                             f"{', '.join(labels[0])}; an ensemble's models must agree")
    shift = ensemble_shift(args.shift, paths, [model for model, _ in loaded])
    owned = [(path, network) for path, (model, _) in zip(paths, loaded, strict=True)
             for network in portanet.ensemble_members(model)]
    owners = [path for path, _ in owned]  # the file of each network
    networks = len(owned)
    if networks < 2 and not shift:
        raise ValueError(f"an ensemble needs two or more networks, got {networks}; train "
                         f"more with portanet train --seed N --save FILE, or give --shift 1 "
                         f"to average one network over shifted copies of each image")
    try:
        model = portanet.ensemble([network for _, network in owned], shift=shift)
    except ValueError as exc:  # "model k" is the k-th network
        raise ValueError(re.sub(r"model (\d+)", lambda m: owners[int(m.group(1))], str(exc))
                         ) from None
    extras = [extra for _, extra in loaded]
    recipes_seen = [extra.get("recipe") for extra in extras]
    saved = portanet.save(
        model, args.save, dataset=extras[0].get("dataset"), class_names=labels[0],
        recipe=recipes_seen[0] if all(r == recipes_seen[0] for r in recipes_seen) else None,
        members=[{"file": os.path.basename(path), "seeds": extra.get("seeds"),
                  "test_accuracy": extra.get("test_accuracy")}
                 for path, extra in zip(paths, extras, strict=True)])
    views = (f", each reading 5 views shifted by {shift} pixel{'s' if shift > 1 else ''},"
             if shift else "")
    print(f"ensemble of {networks} network{'s' if networks > 1 else ''}{views} saved to "
          f"{saved}; its test report: portanet evaluate {saved}")
    return 0


def ensemble_shift(given: int | None, paths: list[str], models: list[portanet.Sequential]
                   ) -> int:
    """``--shift`` if given, else the shift that the ensembles among the files share (0 when
    none is an ensemble); files whose shifts differ need ``--shift``."""
    if given is not None:
        return given
    shifts = {path: model.layers[0].shift for path, model in zip(paths, models, strict=True)
              if isinstance(model.layers[0], Ensemble)}
    if len(set(shifts.values())) > 1:
        raise ValueError(f"the files read shifted views differently ("
                         f"{', '.join(f'{p}: shift {s}' for p, s in shifts.items())}); "
                         f"choose one with --shift PIXELS")
    return next(iter(shifts.values()), 0)


# --- draw -------------------------------------------------------------------------------------


def add_draw(sub: Any) -> None:
    draw = sub.add_parser("draw", help="a local page: draw a digit and watch the model answer")
    draw.add_argument("model_path", metavar="MODEL")
    draw.add_argument("--port", type=arg_types.count, default=8028,
                      help="default 8028; 0: any free port")
    draw.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1: this machine only)")
    arg_types.backend_option(draw)
    draw.add_argument("--open", action="store_true", help="open the page in a browser")
    draw.set_defaults(func=cmd_draw)


def cmd_draw(args: argparse.Namespace) -> int:
    from portanet.app.draw import serve  # the page and its server live outside the library

    return serve(args.model_path, host=args.host, port=args.port, backend=args.backend,
                 open_browser=args.open)


# --- info -------------------------------------------------------------------------------------


def add_info(sub: Any) -> None:
    info = sub.add_parser("info", help="version, backends and GPUs")
    info.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    import array_api_compat

    print(f"portanet {portanet.__version__} (Python {platform.python_version()}, "
          f"NumPy {np.__version__}, array-api-compat {array_api_compat.__version__})")
    chosen = os.environ.get(ENV_VAR, "").strip()
    print(f"default backend: {chosen or 'auto'}" + (f" (from {ENV_VAR})" if chosen else ""))
    if chosen and chosen.lower().replace("-", "_") not in BACKEND_NAMES:
        print(f"warning: {ENV_VAR}={chosen!r} is not a backend; choose one of "
              f"{', '.join(BACKEND_NAMES)} or unset it")
    print("backends:")
    for candidate in candidates():
        if isinstance(candidate, CheckRow):
            print(f"  {candidate.backend:<17} unavailable: {candidate.reason}")
            continue
        seam = candidate.seam
        probed = f" ({seam.available()[1]})" if seam.probe is not None else ""
        print(f"  {candidate.name:<17} available, {seam.version()} on {candidate.device_name}"
              + probed)
    print(f"auto picks: {auto_choice()[0]}")
    print("prove this setup with: portanet check")
    blas = os.environ.get("OPENBLAS_CORETYPE")
    if blas:
        print(f"OPENBLAS_CORETYPE={blas} (forces OpenBLAS kernels; unset it for the CPU's own)")
    return 0


# --- check ------------------------------------------------------------------------------------


def add_check(sub: Any) -> None:
    check = sub.add_parser("check", help="prove this setup: gradients, a step against NumPy, "
                                         "save/load and a timed run on every backend here")
    check.add_argument("--backend", action="append", choices=list(SEAMS),
                       help="check only this backend (repeatable; default: all that can run)")
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from portanet.app.self_check import check

    return 0 if check(args.backend).ok else 1


# --- argument parsing ------------------------------------------------------------------------


SUBCOMMANDS: list[Callable[[Any], None]] = [add_train, add_evaluate, add_predict, add_export,
                                             add_ensemble, add_draw, add_info, add_check,
                                             add_data]
"""The ``add_NAME`` functions, in the order ``portanet --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portanet", description="Train and use small neural networks on NumPy or CuPy.")
    parser.add_argument("--version", action="version", version=f"portanet {portanet.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``portanet`` command; returns the exit status. How a command ends
    (errors in one line, SIGTERM, standard output that fails) is :mod:`portanet.app.cli_exit`."""
    return cli_exit.run(lambda run: _parse_and_run(run, argv),
                        (UsageError, BackendUnavailableError, data.DatasetUnavailableError))


def _parse_and_run(run: cli_exit.Run, argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    run.name = f"portanet {args.command}"
    return args.func(args)
