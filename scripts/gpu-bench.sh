#!/usr/bin/env bash
# The quadrant benchmark on this machine's NVIDIA GPU: builds the GPU environment (make venv-gpu,
# .venv-gpu: TensorFlow with CUDA) and runs benchmarks/gpu_quadrant.py in it, in float32 and bfloat16.
#
#   bash scripts/gpu-bench.sh            (on a GPU node, e.g. srun --gres=gpu:1 -c 8 --mem 32G --pty bash)
#   bash scripts/gpu-bench.sh --quick    (a 2304 px tile: checks the script in a minute, figures meaningless)
#
# Prints km2/s of a quadrant, GFLOP/s achieved against the device's measured matmul rate and data-sheet
# peak, the share of the FCN's time spent reading and decoding the tile versus computing (and whether the
# GPU waits for the reader), and what that gives for Brazil's ~4,000 quadrants. Needs ~2 GB of temporary
# disk (full-size tile) and ~8 GB of host memory; MINESCAN_BENCH_PYTHON replaces the venv (e.g. a conda env).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null || echo "gpu-bench: no nvidia-smi here: the figures will be the CPU's" >&2
PY=${MINESCAN_BENCH_PYTHON:-}
if [ -z "$PY" ]; then
    make venv-gpu
    PY=.venv-gpu/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv 2>/dev/null || true
export PATH="$(dirname "$PY"):$PATH"
for precision in float32 bfloat16; do
    echo "== precision $precision"
    "$PY" benchmarks/gpu_quadrant.py --precision "$precision" "$@"
done
