#!/usr/bin/env bash
# The GPU checks of the fast path, in one short run: the CUDA-only tests, then a short bench.
# Usage (repository root, project venv): benchmarks/gpu_check.sh [extra harness bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# CUDA graph step == eager step; GPU augmentation == CPU augmentation; pinned streaming.
"$PY" -m pytest -q -rs tests/test_fastpath.py tests/test_gpu_augment.py
# Pipelines, packing 1/4/8/12, and the projection on two datasets' cells (about 2 minutes).
"$PY" -m harness.cli bench --device cuda --steps 30 --warmup 10 \
    --grid-datasets fashionmnist,cifar10 --out "${OUT:-benchmarks/results}" "$@"
