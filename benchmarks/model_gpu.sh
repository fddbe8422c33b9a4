#!/usr/bin/env bash
# GPU path of the model: build/install mamba-ssm against the CUDA torch, check parity with the
# CPU path on the same weights, measure training throughput of `paper` (2048) and `long` (16384).
# Run on a machine with an NVIDIA GPU, from the repository root:  bash benchmarks/model_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv
PY=${PYTHON:-python3.11}
if [ ! -x .venv-gpu/bin/python ]; then
  "$PY" -m venv .venv-gpu
  # the CUDA build of the pinned torch (PyPI's Linux wheel), then the project and its gpu extra;
  # mamba-ssm and causal-conv1d compile against that torch (no build isolation), which takes a
  # while the first time
  .venv-gpu/bin/pip install --upgrade pip setuptools wheel packaging ninja
  .venv-gpu/bin/pip install torch==2.13.0
  .venv-gpu/bin/pip install -e .
  MAMBA_FORCE_BUILD=${MAMBA_FORCE_BUILD:-FALSE} \
    .venv-gpu/bin/pip install --no-build-isolation 'causal-conv1d>=1.4' 'mamba-ssm>=2.2'
fi
.venv-gpu/bin/python -c "import torch, mamba_ssm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'mamba_ssm', mamba_ssm.__version__)"
.venv-gpu/bin/python benchmarks/model_gpu.py "$@"
