#!/usr/bin/env bash
# Run by Snakemake (--use-conda) inside the new envs/minescan-gpu.yaml environment: TensorFlow with CUDA
# instead of the tensorflow-cpu that the minescan package pulled in (same step as
# scripts/use-gpu-tensorflow.sh; this copy has to stand alone, Snakemake runs it from elsewhere).
set -euo pipefail
VERSION=$(python -c "import importlib.metadata as m; print(m.version('tensorflow'))")
python -m pip uninstall --yes --quiet tensorflow-cpu || true
python -m pip install --quiet --force-reinstall --no-deps "tensorflow==$VERSION"
python -c "import tensorflow as tf; assert tf.test.is_built_with_cuda(), 'TensorFlow without CUDA'"
