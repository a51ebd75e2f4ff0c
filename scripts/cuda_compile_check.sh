#!/usr/bin/env bash
# The CUDA build, compiled (not run) on a machine without a GPU:
#   1. a virtual environment with a CUDA build of torch (HEE_CUDA_TORCH, default 2.11.0,
#      the GPU machines' version), kept between runs;
#   2. the project built there with HEE_CUDA=1, in a copy of this tree (the checkout's own
#      build is not touched), with no compiler warning beyond torch's headers' unknown
#      `#pragma unroll`;
#   3. both ops have a CUDA kernel, and the library holds code for every architecture of
#      TORCH_CUDA_ARCH_LIST (default 8.0;9.0+PTX: sm_80 and sm_90 code and sm_90 PTX);
#   4. the CPU test suite passes against that build (not with HEE_CUDA_COMPILE_ONLY=1).
# Needs a CUDA toolkit: CUDA_HOME, or the nvcc on the PATH (a wrapper script that execs the
# real nvcc is followed to the toolkit it names). Without one it says so and exits 0.
#
#   scripts/cuda_compile_check.sh [pytest args...]   (default: -k "not cpp_program", see below)
#
# Environment: HEE_CUDA_TORCH the torch version; HEE_CUDA_WORK (default
# /tmp/hee-cuda-check-<version>) holds the venv and the copy; HEE_CUDA_COMPILE_ONLY=1 stops
# after step 3; TORCH_CUDA_ARCH_LIST the architectures; MAX_JOBS the parallel compile jobs
# (setup.py: one more compiles the CPU ISA units beside them).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${HEE_CUDA_TORCH:-2.11.0}"
WORK="${HEE_CUDA_WORK:-/tmp/hee-cuda-check-$TORCH_VERSION}"
ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}"
VENV="$WORK/venv"
SRC="$WORK/src"
LOG="$WORK/build.log"

say() { echo "== cuda_compile_check (torch $TORCH_VERSION): $*"; }

toolkit_root() {
  if [[ -n "${CUDA_HOME:-}" ]]; then
    echo "$CUDA_HOME"
    return
  fi
  local nvcc
  nvcc="$(command -v nvcc || true)"
  [[ -n "$nvcc" ]] || return 0
  # A wrapper script (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`) names the real one.
  local real
  real="$(grep -o '/[^ "]*/bin/nvcc' "$nvcc" 2>/dev/null | head -1 || true)"
  [[ -n "$real" ]] || real="$(readlink -f "$nvcc")"
  dirname "$(dirname "$real")"
}

CUDA_ROOT="$(toolkit_root)"
if [[ -z "$CUDA_ROOT" || ! -f "$CUDA_ROOT/include/cuda_runtime.h" ]]; then
  say "no CUDA toolkit found (set CUDA_HOME); the CUDA build was not checked"
  exit 0
fi
say "toolkit $CUDA_ROOT"

mkdir -p "$WORK"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  say "creating $VENV with torch $TORCH_VERSION"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # A new venv's own setuptools may predate the built-in bdist_wheel that editable
  # installs need; resolved beside torch, which bounds it from above.
  "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" ninja numpy "setuptools>=70.1" wheel 2>&1 \
    | grep -v "is ignored" || true
fi
"$VENV/bin/python" -c "import torch; assert torch.version.cuda, 'torch ' + torch.__version__ + ' is not a CUDA build'"

say "copying the tree to $SRC"
rm -rf "$SRC"
mkdir -p "$SRC"
(cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$SRC"

say "building with HEE_CUDA=1 (log: $LOG)"
start=$SECONDS
# The test extras only where the suite runs.
TARGET=".[test]"
[[ "${HEE_CUDA_COMPILE_ONLY:-0}" == 1 ]] && TARGET="."
(cd "$SRC" && HEE_CUDA=1 CUDA_HOME="$CUDA_ROOT" MAX_JOBS="${MAX_JOBS:-2}" TORCH_CUDA_ARCH_LIST="$ARCH_LIST" \
  "$VENV/bin/python" -m pip install -v --no-build-isolation -e "$TARGET" >"$LOG" 2>&1) || {
  tail -50 "$LOG"
  say "the CUDA build failed"
  exit 1
}
grep -q "hybrid_entropy_ext: building the CUDA kernels" "$LOG"
say "built in $((SECONDS - start)) s for $ARCH_LIST"
# Not compiler warnings: setuptools' note that a MANIFEST.in exclusion (build outputs, for
# the sdist) matched nothing in this clean copy.
warnings="$(grep -E "warning" "$LOG" | grep -v -E "Wunknown-pragmas|is ignored|DEPRECATION|pip's|WARNING: Location|no previously-included (files|directories)" || true)"
if [[ -n "$warnings" ]]; then
  echo "$warnings" | head -40
  say "the build printed warnings"
  exit 1
fi

say "checking the kernels"
(cd "$SRC" && "$VENV/bin/python" - <<'PY'
import torch
from hybrid_entropy_ext import _ops
assert _ops.cuda_kernels_built(), "the library was built without its CUDA kernels"
for op in ("hybrid_entropy_loss", "_hybrid_entropy_loss_backward"):
    name = "hybrid_entropy_ext::" + op
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"), name + " has no CUDA kernel"
print("CUDA kernels registered for both ops;", _ops.library_path())
PY
)
CUOBJDUMP="$(ls "$CUDA_ROOT/bin/cuobjdump" "$VENV"/lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump 2>/dev/null | head -1 || true)"
[[ -n "$CUOBJDUMP" ]] || { say "no cuobjdump (toolkit or Triton)"; exit 1; }
LIB="$(ls "$SRC"/hybrid_entropy_ext/_C*.so)"
elf="$("$CUOBJDUMP" --list-elf "$LIB")"
ptx="$("$CUOBJDUMP" --list-ptx "$LIB")"
echo "$elf"
echo "$ptx"
IFS=';' read -ra archs <<<"$ARCH_LIST"
for arch in "${archs[@]}"; do
  sm="sm_$(tr -d . <<<"${arch%+PTX}")"
  grep -q "$sm" <<<"$elf" || { say "no $sm code in $LIB"; exit 1; }
  if [[ "$arch" == *+PTX ]]; then
    grep -q "$sm" <<<"$ptx" || { say "no $sm PTX in $LIB"; exit 1; }
  fi
done
if [[ "${HEE_CUDA_COMPILE_ONLY:-0}" == 1 ]]; then
  say "compiled (HEE_CUDA_COMPILE_ONLY=1: the test suite is not run against this build)"
  exit 0
fi

say "the test suite against the CUDA build"
# Without arguments, all but the two tests that build examples/cpp with CMake: against a CUDA
# libtorch, CMake's CUDA discovery wants a full toolkit (nvrtc, a GPU to detect or an arch
# list), which a compiler-only toolkit does not have. The main job builds that example
# against the CPU libtorch.
if [[ $# -eq 0 ]]; then
  set -- -k "not cpp_program"
fi
cd "$SRC" && CUDA_HOME="$CUDA_ROOT" "$VENV/bin/python" -m pytest -q -n auto -p no:cacheprovider "$@"
