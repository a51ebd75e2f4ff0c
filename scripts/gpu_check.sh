#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU and its own CUDA build of torch
# (no network needed):
#
#   scripts/gpu_check.sh OUTDIR
#
# 1. builds the library in place with its CUDA kernels (HEE_CUDA=1; sm_90 only unless
#    TORCH_CUDA_ARCH_LIST says otherwise, to keep the build short);
# 2. runs the CUDA tests: tests/test_cuda.py, the kernels' host emulation, and the CUDA
#    cases of the op's device-parametrized tests;
# 3. runs the GPU benchmark (benchmarks/run_benchmarks.py --device cuda).
# Writes into OUTDIR: environment.txt, build.log, test_cuda.log, test_device_axis.log,
# cuda_benchmark.md and cuda_benchmark.json, and summary.txt with each step's exit status.
# Each step runs even if an earlier test step failed; the exit status is non-zero if any did.
set -uo pipefail

OUT="${1:?usage: scripts/gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
cd "$REPO"

status=0
step() {  # step NAME LOG COMMAND...: runs COMMAND, output to LOG, records the exit status
  local name="$1" log="$2"
  shift 2
  local start=$SECONDS
  "$@" >"$OUT/$log" 2>&1
  local rc=$?
  echo "$name: exit $rc, $((SECONDS - start)) s ($log)" | tee -a "$OUT/summary.txt"
  [[ $rc -eq 0 ]] || status=1
  return $rc
}

{
  date -u
  nvidia-smi || true
  "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'CUDA', torch.version.cuda); print(torch.cuda.get_device_name(0))"
  command -v nvcc && nvcc --version
} >"$OUT/environment.txt" 2>&1

: >"$OUT/summary.txt"
if ! step build build.log env HEE_CUDA=1 MAX_JOBS="$(nproc)" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    "$PY" setup.py build_ext --inplace; then
  tail -40 "$OUT/build.log"
  exit 1
fi

step cuda_tests test_cuda.log "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/test_cuda_emulated.py
step device_axis_tests test_device_axis.log "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda \
  tests/test_hybrid_entropy_loss.py tests/test_nonfinite.py tests/test_determinism.py tests/test_pt2.py \
  tests/test_properties.py tests/test_input_checks.py
step benchmark cuda_benchmark.md "$PY" benchmarks/run_benchmarks.py --device cuda --rounds "${HEE_BENCH_ROUNDS:-5}" \
  --json "$OUT/cuda_benchmark.json"

cat "$OUT/summary.txt"
tail -3 "$OUT/test_cuda.log" "$OUT/test_device_axis.log"
exit $status
