#!/usr/bin/env bash
# Prove portanet's GPU half in one offline run on a machine with an NVIDIA GPU and CuPy.
#
#   tools/gpu_check.sh --wheels .whl --data .mnist --out results --budget 480
#   tools/gpu_check.sh --dry-run            # the plan, nothing run
#   tools/gpu_check.sh --cpu --budget 120   # the same plan on NumPy with tiny settings
#
# Options: --budget SECONDS (default 450; the whole run, summary included, ends before it)
#          --out DIR (default bench/results)   --data DIR (MNIST's four IDX .gz files)
#          --wheels DIR (local wheels: array-api-compat, array-api-strict, ...)
#          --backend cupy|torch   --steps a,b,...   --python PY (default python3)
#          --dry-run   --cpu
# Steps, most proof per minute first, each under its own timeout; one that no longer fits in the
# budget is skipped and named so (a skipped step does not fail the run, a failed step does):
#   probe, check (portanet check), tests (-m gpu: the tests on CuPy, junit XML), cnn-fast
#   (full MNIST), mpi (2 ranks on the GPU, or the one-process path), bench (reference MLP and
#   cnn-fast against PyTorch CUDA), cnn (short: BatchNorm, augmentation, dropout), per-sample.
# Offline by design: PORTANET_OFFLINE=1 for every step (no download is attempted; data comes from
# --data, $PORTANET_DATA or the cache; without it the first line says so and only the steps that
# need MNIST are skipped). Set CUPY_CACHE_DIR to a folder you keep and a second run starts warm.
# Results in --out, at most 6 files: STAMP-gpu-check.log (running log), .md and .json (summary,
# rewritten after every step and on exit or SIGTERM), -tests.xml (junit), bench's .json and .md.
# Exit: 0 every step that ran passed, 1 a step failed, 2 bad arguments, 3 no usable CUDA device,
# 143 terminated.
#
# Wheels for a machine without internet (pure Python), from a machine with pip and a network:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl array-api-compat array-api-strict threadpoolctl
# (add pytest pluggy iniconfig packaging hypothesis attrs sortedcontainers if the GPU machine
# lacks them). They are installed with pip --target into a temporary folder (unzipped when pip is
# missing) and put on PYTHONPATH; portanet itself runs from this checkout, uninstalled.
set -uo pipefail

GPU_CHECK_STARTED="$(date +%s.%N)"  # the budget counts from here
GPU_CHECK_COMMAND="tools/gpu_check.sh $*"  # as given, for the summary
export GPU_CHECK_STARTED GPU_CHECK_COMMAND
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) [ $# -ge 2 ] || { echo "gpu_check.sh: --wheels needs a folder" >&2; exit 2; }
              WHEELS="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || { echo "gpu_check.sh: --python needs a path" >&2; exit 2; }
              PY="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
DRY=0
for a in "${ARGS[@]+"${ARGS[@]}"}"; do [ "$a" = "--dry-run" ] && DRY=1; done

if [ -n "$WHEELS" ]; then
  if ! compgen -G "$WHEELS/*.whl" > /dev/null; then
    echo "gpu_check.sh: no wheels (*.whl) in $WHEELS" >&2
    exit 2
  fi
  if [ "$DRY" = 0 ]; then
    SITE="${TMPDIR:-/tmp}/portanet-gpu-check-site"
    mkdir -p "$SITE"
    if "$PY" -m pip --version > /dev/null 2>&1; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl > "$SITE.log" 2>&1 \
        || { echo "gpu_check.sh: installing the wheels failed:" >&2; cat "$SITE.log" >&2; exit 2; }
      how="pip --target"
    else  # pure-Python wheels are zip files: unpacked, they import
      for w in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$w" "$SITE" || exit 2; done
      how="unzipped (no pip)"
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    names=""
    for w in "$WHEELS"/*.whl; do w="${w##*/}"; names="$names ${w%%-py*}"; done
    export GPU_CHECK_INSTALLED="wheels from $WHEELS ($how into $SITE):$names"
  fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/tools/gpu_kit.py" --python "$PY" "${ARGS[@]+"${ARGS[@]}"}"
