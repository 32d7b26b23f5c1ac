#!/usr/bin/env bash
# Set up everything from nothing, idempotently: Debian packages (Fashion-MNIST, Chromium for the UI test),
# a virtualenv in .venv with torch/torchvision from pip (CPU machines here take the on-disk wheels), and the
# project with its test extras. Re-running is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.spfde-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing torch, torchvision and the project (pip; first time takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, torchvision, ray, optuna, mlflow, spfde_search" # fail loudly if anything is missing
  touch "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, ray, optuna, mlflow; print(f"torch {torch.__version__}, ray {ray.__version__}, optuna {optuna.__version__}, mlflow {mlflow.__version__}")')"
