#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU, the CUDA toolkit and a CUDA
# build of torch (2.11 through 2.14), with no network and no pip: it needs only setuptools,
# pytest, hypothesis, numpy and PyYAML beside torch.
#
#   scripts/gpu_check.sh OUTDIR [--rehearse]
#
# Steps, in order of what a first GPU run must learn, each under its own time limit and all
# within one budget (HEE_GPU_CHECK_SECONDS, default 450), so that the whole, start-up
# included, stays within 8 minutes; a step the budget no longer allows is skipped:
#   build       the library in place with its CUDA kernels (HEE_CUDA=1), for sm_90 unless
#               TORCH_CUDA_ARCH_LIST says otherwise, with every core (MAX_JOBS = nproc);
#   memcheck    compute-sanitizer over both ops on every kernel layout
#               (scripts/cuda_sanitizer_workload.py);
#   cuda_tests  tests/test_cuda.py: every layout against the CPU op, graphs, syncs, memory;
#   racecheck, synccheck, initcheck   the other sanitizers over the same workload;
#   device_axis_tests   the CUDA cases of the op's device-parametrized tests, then those of
#               torch.compile and torch.export (tests/test_pt2.py);
#   benchmark   the GPU benchmark's quick sizes (benchmarks/run_benchmarks.py --device cuda);
#   token_terms_benchmark   the per-token terms suite's GPU quick sizes, 16384x151936 bfloat16
#               among them (run_benchmarks.py --suite token-terms --device cuda --quick); TRL's
#               Triton kernel is timed where TRL imports, else reported as unavailable;
#   action_mask_benchmark   both ops with and without an action mask and the reference
#               (run_benchmarks.py --suite action-mask --device cuda);
#   sub_heads_benchmark, parameterized_benchmark   the same rows as the CPU suites of sub-heads
#               and parameterized actions (--suite sub-heads / parameterized --device cuda);
# Test logs are verbose, so a step cut short still shows each test it finished.
# --rehearse: on a machine without a GPU, runs the build and the test steps (which then
# skip their CUDA cases) and leaves out the sanitizers and the benchmark, to check that the
# script, the build and the test collection work with that Python and torch.
#
# Writes into OUTDIR: environment.txt, build.log, sanitize_<tool>.log, test_cuda.log,
# test_device_axis.log, test_pt2.log, cuda_benchmark.md, cuda_benchmark.json,
# token_terms_benchmark.md, token_terms_benchmark.json, action_mask_benchmark.md,
# sub_heads_benchmark.md, parameterized_benchmark.md, and
# summary.txt with each step's exit status and seconds. Every step runs even if an earlier
# one (after the build) failed; the exit status is non-zero if any did. A step past its
# limit exits 124.
set -uo pipefail

OUT="${1:?usage: scripts/gpu_check.sh OUTDIR [--rehearse]}"
REHEARSE=0
[[ "${2:-}" == "--rehearse" ]] && REHEARSE=1
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
cd "$REPO"
START=$SECONDS

BUDGET="${HEE_GPU_CHECK_SECONDS:-450}"
status=0
step() {  # step NAME LOG SECONDS COMMAND...: runs COMMAND, output to LOG, records the exit status
  local name="$1" log="$2" limit="$3"
  shift 3
  local left=$((BUDGET - (SECONDS - START)))
  if ((left < 15)); then
    echo "$name: skipped, $left s of the budget left" | tee -a "$OUT/summary.txt"
    status=1
    return 1
  fi
  ((limit > left)) && limit=$left
  local start=$SECONDS
  timeout --kill-after=5 "$limit" "$@" >"$OUT/$log" 2>&1
  local rc=$?
  echo "$name: exit $rc, $((SECONDS - start)) s of $limit s ($log)" | tee -a "$OUT/summary.txt"
  [[ $rc -eq 0 ]] || status=1
  return $rc
}

sanitize() {  # sanitize TOOL
  step "$1" "sanitize_$1.log" 45 compute-sanitizer --tool "$1" --error-exitcode 1 --print-limit 20 \
    "$PY" scripts/cuda_sanitizer_workload.py
}

PYTEST=("$PY" -m pytest -v -rs -p no:cacheprovider)
# The many small device-axis and compile tests spread over 4 processes where pytest-xdist
# is installed (it is on the GPU machines); one GPU serves them all.
PARALLEL=()
"$PY" -c "import xdist" 2>/dev/null && PARALLEL=(-n 4)
DEVICE_AXIS_FILES=(tests/test_hybrid_entropy_loss.py tests/test_nonfinite.py tests/test_determinism.py
  tests/test_properties.py tests/test_input_checks.py)

{
  date -u
  nvidia-smi || true
  "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'CUDA', torch.version.cuda); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
  command -v nvcc && nvcc --version
  command -v compute-sanitizer && compute-sanitizer --version
  echo "cores: $(nproc)"
} >"$OUT/environment.txt" 2>&1

: >"$OUT/summary.txt"
[[ $REHEARSE -eq 1 ]] && echo "rehearsal: no sanitizer, no benchmark" | tee -a "$OUT/summary.txt"
if ! step build build.log 180 env HEE_CUDA=1 MAX_JOBS="$(nproc)" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    "$PY" setup.py build_ext --inplace; then
  tail -40 "$OUT/build.log"
  exit 1
fi

[[ $REHEARSE -eq 0 ]] && sanitize memcheck
step cuda_tests test_cuda.log 90 "${PYTEST[@]}" tests/test_cuda.py
if [[ $REHEARSE -eq 0 ]]; then
  for tool in racecheck synccheck initcheck; do
    sanitize "$tool"
  done
fi
step device_axis_tests test_device_axis.log 60 "${PYTEST[@]}" "${PARALLEL[@]}" -k cuda "${DEVICE_AXIS_FILES[@]}"
step pt2_tests test_pt2.log 60 "${PYTEST[@]}" "${PARALLEL[@]}" -k cuda tests/test_pt2.py
if [[ $REHEARSE -eq 0 ]]; then
  step benchmark cuda_benchmark.md 60 "$PY" benchmarks/run_benchmarks.py --device cuda --quick \
    --rounds "${HEE_BENCH_ROUNDS:-5}" --json "$OUT/cuda_benchmark.json"
  # A generous limit: Inductor compiles the eager terms for every size.
  step token_terms_benchmark token_terms_benchmark.md 150 "$PY" benchmarks/run_benchmarks.py --suite token-terms \
    --device cuda --quick --rounds "${HEE_BENCH_ROUNDS:-5}" --json "$OUT/token_terms_benchmark.json"
  step action_mask_benchmark action_mask_benchmark.md 60 "$PY" benchmarks/run_benchmarks.py --suite action-mask \
    --device cuda --rounds "${HEE_BENCH_ROUNDS:-5}"
  step sub_heads_benchmark sub_heads_benchmark.md 45 "$PY" benchmarks/run_benchmarks.py --suite sub-heads \
    --device cuda --rounds "${HEE_BENCH_ROUNDS:-5}"
  step parameterized_benchmark parameterized_benchmark.md 45 "$PY" benchmarks/run_benchmarks.py \
    --suite parameterized --device cuda --rounds "${HEE_BENCH_ROUNDS:-5}"
fi

echo "total: $((SECONDS - START)) s" | tee -a "$OUT/summary.txt"
for log in test_cuda.log test_device_axis.log test_pt2.log; do
  [[ -f "$OUT/$log" ]] && tail -1 "$OUT/$log"
done
exit $status
