#!/usr/bin/env bash
# The GPU checks of the fast path, in one short run: the CUDA-only tests, a short bench, and
# the equivalence of the fast paths with the authors'-style pipeline over seeds.
# Usage (repository root, project venv): benchmarks/gpu_check.sh [extra harness bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# CUDA graph step == eager step (single and fused); GPU augmentation == CPU augmentation;
# pinned streaming.
"$PY" -m pytest -q -rs tests/test_fastpath.py tests/test_gpu_augment.py tests/test_fused.py
# Pipelines, packing 1/4/8/12 under MPS when nvidia-cuda-mps-control is on PATH (the JSON's
# packing.mps says whether it served the jobs), fused cohorts of 1/4/8/12 seeds, and the
# projection on the FashionMNIST cells (about 3 minutes with the tests, estimated: not yet timed).
"$PY" -m harness.cli bench --device cuda --steps 30 --warmup 10 --mps --fused 1,4,8,12 \
    --grid-datasets fashionmnist --out "${OUT:-benchmarks/results}" "$@"
# Equivalence over 5 seeds on digits (embedded, no download): the authors'-style loader/fp32,
# the device pipeline in bf16 with CUDA graphs, and the seeds fused; paired differences against
# the seed spread (benchmarks/equivalence.py; about 2 minutes, estimated).
"$PY" benchmarks/equivalence.py --device cuda --model resnet18 --seeds 5 \
    --set max_epochs=20 --out "${OUT:-benchmarks/results}"
