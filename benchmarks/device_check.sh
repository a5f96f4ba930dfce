#!/usr/bin/env bash
# Accelerator check for one NVIDIA H100/H200 machine (JAX, Flax, Optax, Orbax preinstalled; no network).
#
#   benchmarks/device_check.sh                  # measure; rewrites the device_check section of BENCHMARKS.md
#   benchmarks/device_check.sh --cpu_smoke      # tiny sizes on CPU, prints only: checks the logic (< 1 min)
#
# Packages the machine lacks (ml-collections, ...) come as wheels: put them in ./wheels (or point
# ASD_JAX_WHEELS at a folder) and they are installed offline first. Make them on a networked machine with
#   pip download --only-binary=:all: --no-deps -d wheels ml-collections absl-py
# The whole run stops after 8 minutes (the Python side starts no new measurement after 7); whatever was
# measured by then is already written. Other flags go to benchmarks/device_check.py (--json=FILE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${ASD_JAX_WHEELS:-wheels}
if ! "$PYTHON" -c "import ml_collections, absl" 2>/dev/null; then
  if [ -d "$WHEELS" ]; then
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" ml-collections absl-py
  else
    echo "ml_collections / absl missing and no wheels folder at $WHEELS (see the top of this script)" >&2
    exit 1
  fi
fi
"$PYTHON" -c "import jax; print('devices:', jax.devices())"
exec timeout --signal=INT --kill-after=20 480 "$PYTHON" -m benchmarks.device_check "$@"
