#!/usr/bin/env bash
# Builds hybrid_entropy_ext with AddressSanitizer + UndefinedBehaviorSanitizer
# (HEE_SANITIZE=1, see setup.py) in a separate copy of the source tree and runs the test
# suite against that build. The checkout's own extension (hybrid_entropy_ext/_C*.so) is
# never touched.
#
#   scripts/run_sanitized_tests.sh                 # default test set (below)
#   scripts/run_sanitized_tests.sh tests/test_x.py -k name   # any pytest arguments
#
# Environment:
#   HEE_ASAN_DIR   work directory (default /tmp/hee_asan): the copy lives in $HEE_ASAN_DIR/src
#   HEE_ASAN_KEEP  1: reuse the previous sanitized build if csrc/ and setup.py are unchanged
#                  (the Python sources and tests are always copied afresh)
#   MAX_JOBS       parallel compile jobs (default: number of CPUs; setup.py runs one more
#                  for the CPU ISA units)
#
# Python itself is not instrumented, so libasan and libubsan are preloaded; leak detection
# is off (the interpreter "leaks" by design); the first UB report aborts the run with a
# stack trace. Exit status: that of pytest (non-zero on any sanitizer report).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${HEE_ASAN_DIR:-/tmp/hee_asan}"
SRC="$WORK/src"
PYTHON="${PYTHON:-python}"

DEFAULT_TESTS=(
  tests/test_hybrid_entropy_loss.py
  tests/test_properties.py
  tests/test_determinism.py
  tests/test_thread_safety.py
  tests/test_nonfinite.py
  tests/test_big_inputs.py
  tests/test_input_checks.py
  tests/test_regularizer.py
  tests/test_config_safety.py
)
# Not tests/test_memory.py: ASan's allocator keeps freed memory in quarantine and adds
# shadow memory, so RSS-based checks measure the sanitizer, not the extension.

case "$WORK" in
  "$REPO"|"$REPO"/*) echo "HEE_ASAN_DIR must be outside the checkout ($REPO)" >&2; exit 2 ;;
esac

# A fingerprint of what the extension is built from: a kept build is reused only if the
# C++ sources and setup.py are unchanged.
source_hash() {
  (cd "$1" && find csrc setup.py -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

mkdir -p "$WORK"
KEPT_LIB=""
if [[ "${HEE_ASAN_KEEP:-0}" == 1 && -f "$WORK/source.sha256" ]] \
   && [[ "$(cat "$WORK/source.sha256")" == "$(source_hash "$REPO")" ]]; then
  KEPT_LIB="$(ls "$SRC"/hybrid_entropy_ext/_C*.so 2>/dev/null | head -1 || true)"
  [[ -n "$KEPT_LIB" ]] && mv "$KEPT_LIB" "$WORK/" && KEPT_LIB="$WORK/$(basename "$KEPT_LIB")"
fi

# Always a fresh copy of the tree (tests included): tracked and untracked-but-not-ignored
# files, so no build outputs and no compiled extension of the checkout.
echo "== copying the source tree to $SRC"
rm -rf "$SRC"
mkdir -p "$SRC"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
   | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) \
  | tar -C "$SRC" -xf -
rm -f "$SRC"/hybrid_entropy_ext/_C*.so

if [[ -n "$KEPT_LIB" ]]; then
  echo "== reusing the sanitized build (HEE_ASAN_KEEP=1, sources unchanged)"
  mv "$KEPT_LIB" "$SRC/hybrid_entropy_ext/"
else
  echo "== building with HEE_SANITIZE=1 (log: $WORK/build.log)"
  rm -f "$WORK/source.sha256"
  (cd "$SRC" && HEE_SANITIZE=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
     "$PYTHON" setup.py build_ext --inplace --build-temp "$WORK/build" >"$WORK/build.log" 2>&1) || {
    tail -50 "$WORK/build.log" >&2
    echo "sanitizer build failed" >&2
    exit 1
  }
  grep -q "HEE_SANITIZE is set" "$WORK/build.log"
  source_hash "$SRC" >"$WORK/source.sha256"
fi

LIB="$(ls "$SRC"/hybrid_entropy_ext/_C*.so)"
if ! nm -D "$LIB" | grep "__asan_" >/dev/null; then  # not -q: SIGPIPE under pipefail
  echo "$LIB is not instrumented with AddressSanitizer" >&2
  exit 1
fi

ASAN_LIB="$(gcc -print-file-name=libasan.so)"
UBSAN_LIB="$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# The copy comes first on sys.path: tests import the sanitized build, not the checkout's.
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"

cd "$SRC"
"$PYTHON" - "$SRC" <<'EOF'
import sys
import hybrid_entropy_ext._ops as ops
path = ops.library_path()
assert path.startswith(sys.argv[1]), f"tests would use {path}, not the sanitized build"
print(f"== testing against {path} (cpu isa {ops.cpu_isa()})")
EOF

if [[ $# -eq 0 ]]; then
  set -- "${DEFAULT_TESTS[@]}"
fi
echo "== LD_PRELOAD=$LD_PRELOAD ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS"
exec "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
