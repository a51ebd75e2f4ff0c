#!/usr/bin/env bash
# Builds and runs the C++ micro-benchmarks (after the package is installed):
#   row_kernels_bench  ns per logit of each ISA build of the row kernels
#   op_call_bench      the fused op's forward+backward from C++ vs a sum round trip
#   simd_math_accuracy ulp error of the inline SIMD exp and log (x86-64 only)
# The ISA flags are read from setup.py, so they are the ones the package is built with.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
TORCH="$(python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
CXX="${CXX:-g++}"
COMMON=(-O3 -std=c++20 -fPIC -Wno-psabi -I"$REPO/csrc" -I"$TORCH/include" -I"$TORCH/include/torch/csrc/api/include")
LIBS=(-L"$TORCH/lib" -ltorch -ltorch_cpu -lc10 -Wl,-rpath,"$TORCH/lib")

isa_flags() {  # the ISA_FLAGS entry of setup.py for one ISA, without running setup()
  python - "$REPO/setup.py" "$1" <<'PY'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
for node in tree.body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ISA_FLAGS":
        print(" ".join(ast.literal_eval(node.value)[sys.argv[2]]))
PY
}

objects=()
for isa in generic avx2 avx512; do
  # shellcheck disable=SC2046
  "$CXX" "${COMMON[@]}" $(isa_flags "$isa") -c "$REPO/csrc/cpu/row_kernels_$isa.cpp" -o "$OUT/row_kernels_$isa.o" &
  objects+=("$OUT/row_kernels_$isa.o")
done
wait
"$CXX" "${COMMON[@]}" "$REPO/benchmarks/cpp/row_kernels_bench.cpp" "${objects[@]}" "${LIBS[@]}" -o "$OUT/row_kernels_bench"
"$CXX" "${COMMON[@]}" "$REPO/benchmarks/cpp/op_call_bench.cpp" "${LIBS[@]}" -o "$OUT/op_call_bench"

"$OUT/row_kernels_bench"
echo
"$OUT/op_call_bench" "$(python -c 'import hybrid_entropy_ext._ops as o; print(o.library_path())')"

if grep -q '^flags.* avx2' /proc/cpuinfo 2>/dev/null; then
  exp_flags=(-mavx2 -mfma)
  if grep -q '^flags.* avx512dq' /proc/cpuinfo; then
    exp_flags+=(-mavx512f -mavx512dq)
  fi
  "$CXX" -O2 -std=c++20 -I"$REPO/csrc" "${exp_flags[@]}" "$REPO/benchmarks/cpp/simd_math_accuracy.cpp" -o "$OUT/simd_math_accuracy"
  echo
  "$OUT/simd_math_accuracy" 3
fi
