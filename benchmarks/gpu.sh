#!/usr/bin/env bash
# The GPU run in one call, sized for a device lease of 15 minutes (the machine's start included):
#
#   bash benchmarks/gpu.sh               # every step, in this order
#   bash benchmarks/gpu.sh gpu-tests bench   # only the steps named
#
# Steps, most important first:
#   env        nvidia-smi, gpunn info, the CuPy, torch and JAX versions and devices
#   gpu-tests  every test marked gpu (CuPy, torch CUDA and JAX GPU parameters, NCCL, the docs' GPU blocks,
#              scikit-learn's GPU checks), over 8 processes with pytest-xdist where it is installed
#   diff       NumPy-vs-GPU weights after the same Adam run
#   floor      tiny against its kernel-launch floor
#   stream     streaming an .npy file onto the GPU, prefetch on and off
#   bench      the benchmark cells in FP32: the GPU contenders and gpunn-numpy
#   ensemble   256 seed networks as one Ensemble against one network's fit, on each GPU namespace
#   jaxloop    gpunn-jax (compiled) against a hand-written jax.jit loop, on JAX's default device (the GPU)
#   cpu-tests  the rest of the suite (CI runs it too; here it checks that a GPU being present changes nothing)
#   tf32       mid-1024 and wide again with TF32 on, for the benchmark only
#
# Each step runs under its own time limit, cut to what is left of GPU_SH_BUDGET seconds (default 400: give the
# device call a timeout of 480 s, which leaves room for a step's 15 s grace and the packing); a step
# with under 20 s left is skipped and says so. A test step cut short gets SIGINT, so pytest still prints its
# failures. After every step, $OUT holds summary.txt (each step's exit status, time and last lines) and
# gpu-results.tar.gz (every log and result file): two files, as the device tool brings back at most eight, and
# a run cut short still returns what it finished.
#
# Needs numpy, cupy, pytest, hypothesis, safetensors, tqdm and, for the peers, torch, jax and scikit-learn.
# Where array-api-compat/-strict are not installed, the wheels in .whl/ are put on PYTHONPATH first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
BUDGET=${GPU_SH_BUDGET:-400}
STEPS=("$@")
ALL=(env gpu-tests diff floor stream bench ensemble jaxloop cpu-tests tf32)
[ ${#STEPS[@]} -eq 0 ] && STEPS=("${ALL[@]}")

if [ -d .whl ] && ! python3 -c "import array_api_compat, array_api_strict" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! python3 -c "import gpunn, array_api_compat, array_api_strict" > "$OUT/summary.txt" 2>&1; then
  echo "gpu.sh: gpunn or array-api-compat/-strict cannot be imported (were the wheels carried in .whl/?)" \
    | tee -a "$OUT/summary.txt"
  exit 1
fi
# Several test processes share the GPU: JAX must not take 75% of its memory up front in each of them.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# GPU machines may run this as root, which OpenMPI's mpiexec refuses unless told (MPICH's does not mind).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

started=$SECONDS
: > "$OUT/summary.txt"
say() { echo "$*" | tee -a "$OUT/summary.txt"; }
say "gpu.sh $(date -u +%FT%TZ), steps: ${STEPS[*]}, budget ${BUDGET} s"

# step NAME LIMIT_S SHOWN_LINES COMMAND...: run COMMAND into $WORK/NAME.txt, record it, pack the results.
# A limit reached sends SIGINT (pytest then reports what failed so far), and SIGKILL 15 s later.
step() {
  local name=$1 limit=$2 shown=$3
  shift 3
  local left=$((BUDGET - (SECONDS - started)))
  if [ "$left" -lt 20 ]; then
    say "== $name: skipped, ${left} s of the budget left"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  timeout -s INT -k 15 "$limit" bash -c '"$@"' "$name" "$@" > "$WORK/$name.txt" 2>&1
  local rc=$?
  local why=""
  [ $((SECONDS - t0)) -ge "$limit" ] && why=" (cut at its ${limit} s limit)"
  say "== $name: exit $rc in $((SECONDS - t0)) s$why"
  tail -n "$shown" "$WORK/$name.txt" | tee -a "$OUT/summary.txt"
  cp benchmarks/results/gpu-*.json benchmarks/results/gpu-*.md benchmarks/results/gpu-*.png "$WORK/" 2>/dev/null
  tar -czf "$OUT/gpu-results.tar.gz" -C "$WORK" .
}

env_info() {
  nvidia-smi
  python3 -m gpunn info
  python3 -c "import cupy, torch, jax; print('cupy', cupy.__version__, '| torch', torch.__version__, \
torch.cuda.is_available(), '| jax', jax.__version__, jax.devices())"
}

# run_tests MARKER: the tests marked (or not marked) gpu, over 8 processes when pytest-xdist is there (the
# image has it), each with 2 BLAS threads on the 16 cores.
run_tests() {
  local par=()
  python3 -c "import xdist" 2>/dev/null && par=(-n 8)
  local limit=()
  python3 -c "import pytest_timeout" 2>/dev/null && limit=(--timeout 150)
  OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \
    python3 -m pytest -q -rfEs "${par[@]}" "${limit[@]}" -p no:cacheprovider --durations=10 -m "$1" tests
}

export -f env_info run_tests
GPU_PEERS=gpunn-cupy,gpunn-torch-cuda,gpunn-jax,torch-cuda,jax-jit

for s in "${STEPS[@]}"; do
  case $s in
    env) step env 60 4 env_info ;;
    gpu-tests) step gpu-tests 200 30 run_tests gpu ;;
    diff) step diff 60 12 python3 -m benchmarks.gpu_diff ;;
    floor) step floor 60 12 python3 -m benchmarks.launch_floor ;;
    stream) step stream 90 12 python3 -m benchmarks.streaming --format npy --device cuda --rows 1048576 \
      --json "$WORK/streaming-gpu.json" ;;
    bench) step bench 180 30 env CUPY_TF32=0 python3 -m benchmarks --tag gpu-fp32 --rounds 1 --no-memory \
      --reference gpunn-cupy --contenders "gpunn-numpy,$GPU_PEERS" ;;
    ensemble) step ensemble 90 12 python3 -m benchmarks.ensemble --quick --versus-one --members 256 \
      --namespaces cupy torch-cuda jax-gpu --json "$WORK/ensemble-gpu.json" ;;
    jaxloop) step jaxloop 60 8 python3 -m benchmarks.jax_loop --repeats 7 --json "$WORK/jax-loop-gpu.json" ;;
    cpu-tests) step cpu-tests 200 20 run_tests "not gpu" ;;
    tf32) step tf32 90 12 env CUPY_TF32=1 python3 -m benchmarks --tag gpu-tf32 --rounds 1 --no-memory \
      --reference gpunn-cupy --cells mid-1024,wide --contenders gpunn-cupy,torch-cuda ;;
    *) say "== $s: no such step (${ALL[*]})" ;;
  esac
done
say "gpu.sh done in $((SECONDS - started)) s; results in $OUT/gpu-results.tar.gz"
