"""Builds hybrid_entropy_ext._C, the compiled op library.

Build with torch already installed and without build isolation (isolation
would pull a multi-gigabyte CUDA torch into the build environment):

    pip install torch==2.13.0
    pip install --no-build-isolation .

The CPU row kernels are compiled three times, for AVX-512, AVX2+FMA and a
generic x86-64 baseline, and the widest one the running CPU supports is picked
at run time: no flag tunes the build to the building CPU, so the result runs on any x86-64.
"""

import glob
import os
import platform

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")

# Translation units of the row kernels, compiled with their own ISA flags.
# CPU_CAPABILITY* select ATen's Vectorized implementation for that ISA.
ISA_FLAGS = {
    "generic": ["-DCPU_CAPABILITY=DEFAULT"],
    "avx2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c"],
    "avx512": [
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
    ],
}
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# -fopenmp: ATen's at::parallel_for is header-inline OpenMP; without it the
# loops silently run on one thread.
CXX_FLAGS = ["-O3", "-fopenmp", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
LINK_FLAGS = ["-fopenmp"]

# HEE_SANITIZE=1: an AddressSanitizer + UndefinedBehaviorSanitizer build for tests
# (scripts/run_sanitized_tests.sh). The later -O1 overrides -O3. Python itself is not
# instrumented, so the result only loads with libasan/libubsan in LD_PRELOAD.
SANITIZE = os.environ.get("HEE_SANITIZE", "") not in ("", "0")
SANITIZER_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
if SANITIZE:
    CXX_FLAGS += SANITIZER_FLAGS
    LINK_FLAGS += SANITIZER_FLAGS
    print("hybrid_entropy_ext: HEE_SANITIZE is set, building with " + " ".join(SANITIZER_FLAGS))


def isa_of(source):
    stem = os.path.splitext(os.path.basename(source))[0]
    for isa in ISA_FLAGS:
        if stem.endswith("_" + isa):
            return isa
    return None


class BuildExtensionWithIsaFlags(BuildExtension):
    """BuildExtension that compiles each ISA's row kernels with its own flags."""

    def build_extension(self, ext):
        isa_sources = [s for s in ext.sources if isa_of(s)]
        ext.sources = [s for s in ext.sources if not isa_of(s)]
        base_flags = ext.extra_compile_args["cxx"]
        for source in isa_sources:
            isa = isa_of(source)
            if isa != "generic" and not IS_X86_64:
                continue
            ext.extra_objects += self.compiler.compile(
                [source],
                output_dir=self.build_temp,
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": base_flags + ISA_FLAGS[isa]},
            )
        super().build_extension(ext)


def sources():
    found = glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp"))
    return sorted(found)


def defines():
    # Non-x86 builds have only the generic row kernels.
    return [] if IS_X86_64 else ["-DHEE_GENERIC_CPU_ONLY"]


print("hybrid_entropy_ext: building the CPU op library (row kernels: %s)"
      % (", ".join(ISA_FLAGS) if IS_X86_64 else "generic"))

setup(
    ext_modules=[
        CppExtension(
            name="hybrid_entropy_ext._C",
            sources=sources(),
            extra_compile_args={"cxx": CXX_FLAGS + defines()},
            extra_link_args=LINK_FLAGS,
            py_limited_api=True,
        )
    ],
    cmdclass={"build_ext": BuildExtensionWithIsaFlags},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
