#!/usr/bin/env bash
# Prove portanet's GPU half on a machine with an NVIDIA GPU and CuPy, with or without a network.
#
#   tools/gpu_check.sh                 # everything; results under bench/results/
#   tools/gpu_check.sh --dry-run       # print the steps and stop
#   tools/gpu_check.sh --cpu --steps check,per-sample --out /tmp/x   # same steps on NumPy, tiny
#
# Steps (--steps takes a comma-separated subset, in this order):
#   install     missing test packages from wheels brought along (--wheels, default .whl/)
#   cuda        stop with the reason unless CuPy can compute on a CUDA device
#   check       portanet check (every backend here; the table)
#   suite       the test suite; the backend fixture adds CuPy where a device is usable
#   bench       python -m bench --quick --backend cupy (PyTorch CUDA beside it when installed)
#   examples    every program in examples/ on CuPy (test accuracy, seconds, samples/s)
#   per-sample  microseconds per sample of per-sample SGD, CuPy against NumPy
# Results: bench/results/DATE-gpu-check.md (summary) and DATE-gpu-check.log (every output),
# plus the bench step's own JSON and markdown. Exit status: 0 when every step passed, 1 when a
# step failed, 2 for bad arguments or missing wheels, 3 when no usable CUDA device is here.
#
# No network: bring the packages CuPy machines often lack as wheels. On a machine with pip and a
# network, from the repository root (for Python 3.12 on x86-64 Linux; they are pure Python):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     array-api-compat array-api-strict pytest pluggy iniconfig packaging hypothesis attrs \
#     sortedcontainers
# and copy .whl/ along with the repository (CuPy itself: add "cupy-cuda12x[ctk]" without
# --no-deps, or use the machine's own CuPy).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="$ROOT/.whl"
OUT="$ROOT/bench/results"
STEPS="install,cuda,check,suite,bench,examples,per-sample"
DRY=0
CPU=0

usage() { sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --cpu) CPU=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for step in ${STEPS//,/ }; do
  case "$step" in
    install|cuda|check|suite|bench|examples|per-sample) ;;
    *) echo "gpu_check.sh: unknown step '$step'; steps: install,cuda,check,suite,bench,examples,per-sample" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$STEPS," == *",$1,"* ]]; }

if [ "$CPU" = 1 ]; then  # the same steps on NumPy with tiny settings: for the test suite
  BACKEND=numpy; BENCH_MODE=--tiny; EXAMPLE_ARGS="--limit 1000"; SUITE_ARGS="${GPU_CHECK_SUITE_ARGS:-tests/test_cuda.py}"
else
  BACKEND=cupy; BENCH_MODE=--quick; EXAMPLE_ARGS=""; SUITE_ARGS="${GPU_CHECK_SUITE_ARGS:--m not network}"
fi
STAMP="$(date -u +%Y%m%d-%H%M%SZ)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
[ "$DRY" = 1 ] || mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/portanet-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

run() {  # run NAME COMMAND...: output to $WORK/NAME.txt (and the terminal), status to NAME.rc
  local name="$1"; shift
  echo "== $name: $*"
  if [ "$DRY" = 1 ]; then return 0; fi
  ( cd "$ROOT" && "$@" ) 2>&1 | tee "$WORK/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "$rc" > "$WORK/$name.rc"
  echo "== $name: exit $rc"
  return 0
}

if wants install; then
  missing=()
  for pair in array_api_compat:array-api-compat array_api_strict:array-api-strict \
              pytest:pytest hypothesis:hypothesis; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ ! -d "$WHEELS" ] && [ "$DRY" = 0 ]; then
      echo "gpu_check.sh: ${missing[*]} missing and no wheels folder at $WHEELS; download them" \
           "as described at the top of tools/gpu_check.sh, or pass --wheels DIR" >&2
      exit 2
    fi
    run install "$PY" -m pip install --no-index --find-links "$WHEELS" "${missing[@]}"
  else
    echo "== install: nothing to install (array-api-compat, array-api-strict, pytest, hypothesis present)"
  fi
fi

if wants cuda && [ "$CPU" = 0 ] && [ "$DRY" = 0 ]; then
  if ! why="$("$PY" -c 'from portanet.backend import cuda_status
ok, why = cuda_status()
print(why)
raise SystemExit(0 if ok else 3)' 2>&1)"; then
    echo "gpu_check.sh: no usable CUDA device here: ${why##*$'\n'}" >&2
    echo "gpu_check.sh: this kit proves the GPU half; on this machine run 'portanet check' and" \
         "the test suite instead, or 'tools/gpu_check.sh --cpu' to rehearse the steps" >&2
    exit 3
  fi
  echo "== cuda: $why"
fi

wants check && run check "$PY" -m portanet check
# shellcheck disable=SC2086  # SUITE_ARGS holds several words
wants suite && run suite "$PY" -m pytest -q -p no:cacheprovider $SUITE_ARGS
# bench's files go to --out; per-sample SGD is its own step (below), so bench skips it here
BENCH_ARGS=("$BENCH_MODE" --backend "$BACKEND" --out "$OUT" --no-summary
            --sections reference,scaling)
[ "$CPU" = 1 ] && BENCH_ARGS+=(--no-torch)
wants bench && run bench "$PY" -m bench "${BENCH_ARGS[@]}"
if wants examples; then
  for example in "$ROOT"/examples/[!_]*.py; do
    name="$(basename "$example" .py)"
    # shellcheck disable=SC2086
    run "example-$name" "$PY" "$example" --backend "$BACKEND" $EXAMPLE_ARGS
  done
fi
if wants per-sample; then
  run per-sample "$PY" -m bench "$BENCH_MODE" --backend "$BACKEND" --sections per_sample \
      --no-torch --out "$WORK/bench" --no-summary
fi
[ "$DRY" = 1 ] && exit 0

"$PY" "$ROOT/tools/gpu_report.py" "$WORK" "$OUT" "$STAMP" "$BACKEND"
