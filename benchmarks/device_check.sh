#!/usr/bin/env bash
# Accelerator check for one NVIDIA H100/H200 machine (JAX, Flax, Optax, Orbax preinstalled; no network).
#
#   benchmarks/device_check.sh                  # measure; rewrites the device_check section of BENCHMARKS.md
#   benchmarks/device_check.sh --cpu_smoke      # tiny sizes on CPU, prints only: checks the logic (< 1 min)
#   benchmarks/device_check.sh --only=pretrain  # only some groups: extraction, finetune, pretrain
#
# Packages the machine lacks come as wheels (the H200 image has JAX, Flax, Optax, Orbax, absl and tqdm, but
# not ml-collections): `make device-wheels` downloads them into ./.whl on a networked machine (carry that
# folder), or point ASD_JAX_WHEELS at another folder. Missing ones are installed offline, without
# dependencies, into a private folder put on PYTHONPATH; nothing else on the machine changes.
# The whole run stops after 8 minutes (the Python side starts no new measurement after 7); whatever was
# measured by then is already written. Other flags go to benchmarks/device_check.py (--json=FILE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${ASD_JAX_WHEELS:-.whl}
missing=$("$PYTHON" -c '
import importlib.util
needed = {"ml_collections": "ml-collections", "absl": "absl-py", "tqdm": "tqdm"}
print(" ".join(pkg for module, pkg in needed.items() if importlib.util.find_spec(module) is None))')
if [ -n "$missing" ]; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "missing Python packages: $missing; no wheels in $WHEELS (run 'make device-wheels' where pip works)" >&2
    exit 1
  fi
  site=${TMPDIR:-/tmp}/asd_jax_site
  "$PYTHON" -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed from $WHEELS into $site: $(ls "$WHEELS")"
fi
"$PYTHON" -c "import jax; print('devices:', jax.devices())"
exec timeout --signal=INT --kill-after=20 480 "$PYTHON" -m benchmarks.device_check "$@"
