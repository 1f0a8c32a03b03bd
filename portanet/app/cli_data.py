"""The command line's data: ``portanet data`` (fetch, verify and locate MNIST / Fashion-MNIST)
and the data options of ``portanet train`` and ``portanet evaluate``.

    portanet data mnist                  # fetch and verify
    portanet data mnist --where          # where the files are (fetches nothing)
    portanet data fashion-mnist --verify # re-check the local copies (fetches nothing)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from portanet import data
from portanet.app import arg_types
from portanet.data.verify import Copy

DATASET_HELP = "data set: " + ", ".join(data.dataset_names())


def add_data(sub: Any) -> None:
    """Declare ``portanet data`` and its arguments on the subparsers ``sub``."""
    parser = sub.add_parser("data", help="fetch, verify and locate MNIST / Fashion-MNIST")
    parser.add_argument("dataset", nargs="?", default="mnist", choices=data.dataset_names(),
                        metavar="NAME", help=DATASET_HELP + " (default: mnist)")
    parser.add_argument("--verify", action="store_true",
                        help="re-check the checksums of the local copies and report OK/bad per "
                             "file (fetches nothing)")
    parser.add_argument("--where", action="store_true",
                        help="print where the data lives (fetches nothing)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help=f"a folder with the IDX files or an .npz to use first "
                             f"(default: ${data.DATA_ENV})")
    parser.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    """Fetch and verify the data set, or with ``--where`` / ``--verify`` only look at the local
    copies; the exit status."""
    spec = data.get_spec(args.dataset)
    if args.where or args.verify:
        copies = data.sources.local_copies(spec, args.data_dir)
        status = 0
        if args.where:
            status |= print_where(spec, copies)
        if args.verify:
            status |= print_verify(spec, copies)
        return status
    try:
        found = data.sources.find(spec, args.data_dir)
    except data.DatasetUnavailableError as exc:  # not a usage error: status 1, as for --verify
        print(f"portanet data: {exc}", file=sys.stderr)
        return 1
    for name in data.FILES:
        print(f"OK   {name}  ({found[name][0]})")
    print(f"{spec.title} is ready: {len(found[data.TRAIN_IMAGES][1])} training and "
          f"{len(found[data.TEST_IMAGES][1])} test images, verified.")
    return 0


def print_where(spec: data.DatasetSpec, copies: list[Copy]) -> int:
    """Print the cache folder and where each file's first verified copy is; 1 if one has none."""
    print(f"cache folder: {data.cache_dir() / spec.name}")
    good = {c.name: c.where for c in reversed(copies) if c.array is not None}  # first wins
    absent = f"no verified copy here (run: portanet data {spec.name})"
    for name in data.FILES:
        print(f"{name}: {good.get(name, absent)}")
    return 0 if len(good) == len(data.FILES) else 1


def print_verify(spec: data.DatasetSpec, copies: list[Copy]) -> int:
    """Print OK, BAD (with why) or MISSING for every local copy; 1 if a file is missing or a
    copy is bad."""
    for copy in copies:
        print(f"BAD  {copy.where}: {copy.problem}" if copy.problem else f"OK   {copy.where}")
    missing = [name for name in data.FILES if not any(c.name == name for c in copies)]
    for name in missing:
        print(f"MISSING  {name} (run: portanet data {spec.name})")
    if missing or any(copy.problem for copy in copies):
        print(f"portanet data: {spec.title} is not complete and verified here", file=sys.stderr)
        return 1
    print(f"{spec.title}: every file verified")
    return 0


def data_options(p: argparse.ArgumentParser) -> None:
    """Add ``--data-dir``, ``--dataset-file`` and ``--limit`` to the parser ``p``."""
    p.add_argument("--data-dir", type=arg_types.path,
                   help="folder with the dataset files (else PORTANET_DATA, the cache, or a "
                        "download)")
    p.add_argument("--dataset-file", type=arg_types.path,
                   help="your own .npz with x_train, y_train, x_test, y_test (28x28 uint8 "
                        "images)")
    p.add_argument("--limit", type=arg_types.count, default=0,
                   help="use only the first N training and test images (quick runs)")
