#!/usr/bin/env bash
# Set up everything from nothing, idempotently: Debian packages (Fashion-MNIST, Chromium for the UI test),
# a virtualenv in .venv with torch/torchvision from pip (CPU machines here take the on-disk wheels), and the
# project with its test extras. Re-running is cheap: each step is skipped when already done.
#
# Quiet by default: apt's and pip's output (~160 lines of apt progress, pip's editable-install warning block)
# goes to .venv/setup.log and is shown only if a step fails; `scripts/setup.sh -v` (or `make setup V=1`) shows it
# as it happens.
#
# torch: PyPI's only Linux x86_64 build of torch 2.14.1 is the CUDA one (~6 GB with its nvidia-* wheels, CPU
# machines included); the CPU builds live only on PyTorch's own wheel index, which this machine's pip cannot reach.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VERBOSE=0
[ "${1:-}" = "-v" ] && VERBOSE=1
LOG=.venv/setup.log
mkdir -p .venv
: >"$LOG"  # this run's steps only

# run a noisy step: live with -v, else logged and replayed only on failure
quiet() {
  if [ "$VERBOSE" = 1 ]; then "$@"; return; fi
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[setup] failed: $* (log: $LOG)" >&2
    tail -n 40 "$LOG" >&2
    return 1
  fi
}

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  quiet $SUDO apt-get update -q
  quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then  # .venv may hold only the log so far
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.spfde-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing torch, torchvision and the project (pip; first time takes a few minutes)"
  quiet .venv/bin/python -m pip install -q --upgrade pip
  quiet .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  quiet .venv/bin/python -m pip install -q -e ".[test]"
  .venv/bin/python -c "import torch, torchvision, ray, optuna, mlflow, spfde_search" # fail loudly if anything is missing
  touch "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, ray, optuna, mlflow; print(f"torch {torch.__version__}, ray {ray.__version__}, optuna {optuna.__version__}, mlflow {mlflow.__version__}")')"
