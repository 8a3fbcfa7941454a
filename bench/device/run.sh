#!/usr/bin/env bash
# The GPU checks of the performance issue in one call, on a machine with CUDA and PyTorch that
# reaches no package index (run bench/device/prepare.sh first, beside it, and hand .device/ over):
#   1. the GPU suite's eager paths, vit_b and vit_h (bench/gpu.py)
#   2. the served adaptive batching suite on CUDA, on vs off, concurrency 1 and 16 (bench/batching.py)
#   3. the compiled paths (torch.compile of ours; segment-anything-fast max-autotune) with the time left
# Results go to $OUT (the device tool's folder) or bench/results, written as they are measured, so a
# run cut short keeps what it had. BUDGET_S: the seconds this script may take (default 540);
# GPU_MODELS (vit_b vit_h), BATCHING_MODEL (vit_b), SEGANY_DEVICE (cuda) and WHEELS (.device/whl)
# change it for a rehearsal elsewhere, e.g. on CPU:
#   PATH=.venv/bin:$PATH BUDGET_S=300 GPU_MODELS=tiny BATCHING_MODEL=tiny SEGANY_DEVICE=cpu WHEELS= OUT=/tmp/r bench/device/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
budget=${BUDGET_S:-540}
left() { echo $((budget - (SECONDS - start))); }
export PYTHONUNBUFFERED=1 BENTOML_DO_NOT_TRACK=true SEGANY_DEVICE=${SEGANY_DEVICE:-cuda}
models=${GPU_MODELS:-vit_b vit_h}
wheels=${WHEELS-.device/whl}
export SEGANY_BENCH_RESULTS=${OUT:-$PWD/bench/results}
[ -d .device/photos ] && export SEGANY_BENCH_PHOTOS=$PWD/.device/photos
log=$SEGANY_BENCH_RESULTS/device-run.log
mkdir -p "$SEGANY_BENCH_RESULTS"
{
  if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch, bentoml, segment_anything; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'bentoml', bentoml.__version__)"
  echo "== 1. encoder paths, eager ($(left) s left)"
  timeout $(( $(left) * 45 / 100 )) python3 -m bench gpu --gpu-models $models --gpu-paths eager_fp32 eager_bf16 ours sam_fast_eager
  echo "== 2. served batching on CUDA ($(left) s left)"
  timeout $(( $(left) * 45 / 100 )) python3 -m bench batching --model "${BATCHING_MODEL:-vit_b}" --concurrency 1 16 --max-batch 16 --rounds 4
  echo "== 3. compiled paths ($(left) s left)"
  timeout $(( $(left) - 15 )) python3 -m bench gpu --gpu-models $models --gpu-paths ours_compiled sam_fast --gpu-result gpu-compiled
  echo "== done ($(left) s left)"
} 2>&1 | tee "$log"
