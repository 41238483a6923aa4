#!/usr/bin/env bash
# The GPU run in one go, on a bare CUDA machine: GPU tests (CuPy, torch CUDA), the benchmark cells in
# FP32 and in TF32 (switched on here, for the benchmark only, and recorded), then tiny against its kernel-launch
# floor. Results go under $OUT, or benchmarks/results when OUT is unset.
#
#   bash benchmarks/gpu.sh
#
# Needs numpy, cupy, pytest, hypothesis, safetensors, tqdm and (for the peers) torch, jax, scikit-learn.
# Where array-api-compat/-strict are not installed, wheels in .whl/ are put on PYTHONPATH first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import array_api_compat" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -m gpunn info > "$OUT/gpunn-info.txt" 2>&1

# 1. The whole suite, GPU parameters included (they run when a GPU is usable).
python3 -m pytest -q -rs tests > "$OUT/gpu-tests.txt" 2>&1
echo "tests: $(tail -n 1 "$OUT/gpu-tests.txt")"

# 2. Largest NumPy-vs-CuPy difference after the cross-backend Adam run, for docs/devices.md.
python3 -m benchmarks.gpu_diff > "$OUT/gpu-diff.json" 2>&1
cat "$OUT/gpu-diff.json"

# 3. Benchmark cells, FP32 then TF32.
CUPY_TF32=0 python3 -m benchmarks --tag gpu-fp32 --rounds 2 > "$OUT/gpu-fp32.log" 2>&1
CUPY_TF32=1 python3 -m benchmarks --tag gpu-tf32 --rounds 1 --contenders gpunn-cupy,torch-cuda \
  > "$OUT/gpu-tf32.log" 2>&1
cp benchmarks/results/gpu-fp32.* benchmarks/results/gpu-tf32.* "$OUT/" 2>/dev/null
tail -n 30 "$OUT/gpu-fp32.log"

# 4. tiny against its kernel-launch floor (kernels per step counted by torch's profiler, launch time measured).
python3 -m benchmarks.launch_floor > "$OUT/launch-floor.json" 2>&1
cat "$OUT/launch-floor.json"

# 5. Array operations per training step (eager torch path), the figure that predicts a GPU step's launch cost.
python3 -m benchmarks.ops --json "$OUT/ops.json" > "$OUT/ops.txt" 2>&1
tail -n 8 "$OUT/ops.txt"

# 6. Streaming from an .npy file (no pyarrow on the GPU image) onto the GPU: what prefetching (pinned memory, a
#    copy stream, a reading thread) hides of an epoch's reading and host-to-device copies.
python3 -m benchmarks.streaming --format npy --device cuda --rows 1048576 --json "$OUT/streaming-gpu.json" \
  > "$OUT/streaming-gpu.txt" 2>&1
tail -n 12 "$OUT/streaming-gpu.txt"
