#!/usr/bin/env bash
# Make the Python environment given as $1 (a venv or conda env prefix; default: the `python` on PATH) use
# TensorFlow with CUDA instead of tensorflow-cpu.
#
#   bash scripts/use-gpu-tensorflow.sh .venv-gpu      (what `make venv-gpu` runs after pip install -e ".[gpu]")
#
# Why: minescan depends on tensorflow-cpu (laptops, CI, CPU nodes), and the `gpu` extra adds
# tensorflow[and-cuda]; both distributions install the same `tensorflow` package, so whichever pip
# unpacked last owns the files. This removes tensorflow-cpu, then reinstalls the `tensorflow`
# distribution of the version already resolved (without touching its CUDA wheels, already installed), and
# checks that TensorFlow imports and is built with CUDA. `pip check` then reports tensorflow-cpu as
# missing for minescan: expected. envs/minescan-gpu.post-deploy.sh does the same in the conda environment.
set -euo pipefail
PY=python
if [ -n "${1:-}" ]; then PY="$1/bin/python"; fi
"$PY" -c "import importlib.metadata as m; m.version('tensorflow')" 2>/dev/null \
    || { echo "use-gpu-tensorflow: the 'tensorflow' distribution is not installed in $PY's environment" \
              "(install the gpu extra first: pip install -e '.[gpu]')" >&2; exit 1; }
VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('tensorflow'))")
"$PY" -m pip uninstall --yes --quiet tensorflow-cpu || true
"$PY" -m pip install --quiet --force-reinstall --no-deps "tensorflow==$VERSION"
"$PY" - <<'PYEOF'
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
assert tf.test.is_built_with_cuda(), "TensorFlow is still the CPU-only build"
print(f"use-gpu-tensorflow: TensorFlow {tf.__version__} with CUDA; GPUs visible here: "
      f"{[d.name for d in tf.config.list_physical_devices('GPU')] or 'none (fine on a login node)'}")
PYEOF
