#!/usr/bin/env bash
# The prepared GPU benchmark for a lent H100/H200 (the device tool): sets up a CUDA
# environment from the lock, then runs bench/gpu.py (SD1.5 512²/50, SDXL 1024²/30, the
# kiosk's inpaint 768²/30: raw diffusers, Bildwerk default and fast path over HTTP; 8
# clients, cancel latency, memory after an OOM). Writes bench/results/gpu.json.
# Meant to finish in under 8 minutes on an H100-class GPU (set-up included when the
# wheels are cached); options go to bench/gpu.py, e.g. --cases sd15 --runs 3.
#
#   bench/gpu.sh                       # everything
#   bench/gpu.sh --compile off         # without torch.compile on the fast path
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  # PyPI's torch wheels for Linux are the CUDA builds (torchvision must match).
  TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0 torchvision==0.28.0}" scripts/bootstrap
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export HF_HUB_OFFLINE=1
exec .venv/bin/python bench/gpu.py "$@"
