"""Builds hybrid_entropy_ext._C, the compiled op library.

Build with torch already installed and without build isolation (isolation
would pull a multi-gigabyte CUDA torch into the build environment):

    pip install torch==2.13.0
    pip install --no-build-isolation .

The CPU row kernels are compiled three times, for AVX-512, AVX2+FMA and a
generic x86-64 baseline, and the widest one the running CPU supports is picked
at run time: no flag tunes the build to the building CPU, so the result runs on any x86-64.

CUDA kernels are built when torch is a CUDA build (``torch.version.cuda``) and a
CUDA toolkit is found (``CUDA_HOME``), never decided by whether a GPU is present:
``HEE_CUDA=1`` requires them (and fails here, saying why, if they cannot be
built), ``HEE_CUDA=0`` skips them. Architectures: ``TORCH_CUDA_ARCH_LIST``,
by default ``8.0;9.0+PTX``.

The library uses torch's C++ ABI, so it is tied to the torch it was built
against: that version is pinned in the package's requirements and recorded
in ``hybrid_entropy_ext/_build_info.py``, which the package checks at import.
"""

import glob
import os
import platform
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
from setuptools import setup
from torch.utils import cpp_extension
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"

# The per-ISA translation units of the row kernels, each compiled with its
# own flags. CPU_CAPABILITY* select ATen's Vectorized implementation for that
# ISA and name the inline namespace everything those units compile goes in.
ISA_SOURCES = {
    "generic": "csrc/cpu/row_kernels_generic.cpp",
    "avx2": "csrc/cpu/row_kernels_avx2.cpp",
    "avx512": "csrc/cpu/row_kernels_avx512.cpp",
}
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

# abi3: one library for every CPython from torch's oldest supported one on;
# it references no Python symbol beyond the limited API (ops.cpp looks up the
# one function it calls). BuildExtension defines Py_LIMITED_API as torch's
# min_supported_cpython; the same value here keeps the wheel's tag in step.
PY_LIMITED_API = getattr(cpp_extension, "min_supported_cpython", "0x030A0000")


def abi3_tag(limited_api_hex):
    """The wheel tag of a Py_LIMITED_API value: 0x030A0000 -> cp310."""
    return "cp3%d" % int(limited_api_hex[4:6], 16)


ABI3_TAG = abi3_tag(PY_LIMITED_API)

DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


def log(message):
    print("hybrid_entropy_ext: " + message, flush=True)


def uses_openmp():
    # at::parallel_for is header-inline: with torch's OpenMP backend it is an
    # `omp parallel` region, and without -fopenmp it silently runs on one
    # thread. Other backends (native thread pool, TBB) need no flag.
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def cuda_choice():
    """(build CUDA?, why), from HEE_CUDA, torch.version.cuda and the toolkit."""
    requested = os.environ.get("HEE_CUDA", "").strip()
    if requested not in ("", "0", "1"):
        sys.exit(f"hybrid_entropy_ext: HEE_CUDA must be 0, 1 or unset, got {requested!r}")
    if requested == "0":
        return False, "HEE_CUDA=0"
    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is not a CUDA build (torch.version.cuda is None)")
    home = cpp_extension.CUDA_HOME
    if home is None:
        problems.append("no CUDA toolkit found (set CUDA_HOME to the toolkit root)")
    elif not os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
        problems.append(
            f"CUDA_HOME={home} has no include/cuda_runtime.h (set CUDA_HOME to the toolkit "
            "root, e.g. the directory whose bin/ holds the real nvcc)"
        )
    if not problems:
        return True, f"torch {torch.__version__} (CUDA {torch.version.cuda}), toolkit {home}"
    why = "; ".join(problems)
    if requested == "1":
        sys.exit("hybrid_entropy_ext: HEE_CUDA=1 but the CUDA kernels cannot be built: " + why)
    return False, why


def pip_cuda_include_dirs():
    # torch's CUDA headers include cusparse.h and friends, which CUDA wheels of
    # torch install under site-packages/nvidia/<pkg>/include, not in the toolkit.
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(
        d for d in glob.glob(os.path.join(site, "nvidia", "*", "include")) if os.path.isdir(d)
    )


def write_build_info(build_cuda):
    path = os.path.join(ROOT, "hybrid_entropy_ext", "_build_info.py")
    text = (
        '"""Written by setup.py when the extension is built (not in version control)."""\n\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"CUDA_VERSION = {torch.version.cuda if build_cuda else None!r}\n"
    )
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def torch_requirement():
    # The public version: a local label (+cpu, +cu130) names the wheel's
    # variant, and pip's `==` ignores it when the requirement has none.
    return "torch==" + re.sub(r"\+.*$", "", torch.__version__)


def isa_of(source):
    for isa, isa_source in ISA_SOURCES.items():
        if os.path.normpath(source) == os.path.normpath(isa_source):
            return isa
    return None


class BuildExtensionWithIsaFlags(BuildExtension):
    """BuildExtension that compiles each ISA's row kernels with its own flags.

    torch's ninja file gives every source the same flags, so each ISA unit is its own
    ninja build. They are the longest C++ compiles, so one thread compiles them, one
    after another, beside the main build (at most MAX_JOBS + 1 compilers at once), and
    the link waits for them; with MAX_JOBS=1 they compile before it.
    """

    def build_extension(self, ext):
        sources = ext.sources
        isa_sources = [s for s in sources if isa_of(s)]
        if not isa_sources:
            return super().build_extension(ext)
        # By now BuildExtension has added its own flags (ABI, C++ standard,
        # extension name) to the cxx flags: the ISA units get them too.
        base_flags = list(ext.extra_compile_args["cxx"])

        def compile_isa_units():
            objects = []
            for source in isa_sources:
                isa = isa_of(source)
                # One folder per unit: each ninja build writes its own build.ninja.
                objects += self.compiler.compile(
                    [source],
                    output_dir=os.path.join(self.build_temp, "isa_" + isa),
                    macros=ext.define_macros,
                    include_dirs=ext.include_dirs,
                    extra_postargs={"cxx": base_flags + ISA_FLAGS[isa]},
                )
            return objects

        link = self.compiler.link_shared_object
        ext.sources = [s for s in sources if not isa_of(s)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            isa_objects = pool.submit(compile_isa_units)
            if max_jobs() == 1:
                isa_objects.result()

            def link_with_isa_objects(objects, *args, **kwargs):
                return link(list(objects) + isa_objects.result(), *args, **kwargs)

            self.compiler.link_shared_object = link_with_isa_objects
            try:
                super().build_extension(ext)
            finally:
                self.compiler.link_shared_object = link
                ext.sources = sources
            # Where setuptools found the library up to date and linked nothing, a
            # failed unit still fails the build.
            isa_objects.result()


def max_jobs():
    """MAX_JOBS, as torch's ninja builds read it, or the CPU count."""
    jobs = os.environ.get("MAX_JOBS", "")
    return max(1, int(jobs)) if jobs.isdigit() else (os.cpu_count() or 1)


def build_dependencies(sources):
    """What setuptools compares with the library to decide it is up to date: the headers,
    and the ISA units, which the main build's source list leaves out."""
    headers = [
        path
        for folder in (CSRC, os.path.join(CSRC, "cpu"), os.path.join(CSRC, "cuda"))
        for pattern in ("*.h", "*.cuh")
        for path in glob.glob(os.path.join(folder, pattern))
    ]
    return sorted(headers) + [s for s in sources if isa_of(s)]


def cpp_sources():
    found = glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp"))
    isa_units = set(ISA_SOURCES.values()) if IS_X86_64 else {ISA_SOURCES["generic"]}
    regular = [s for s in found if os.path.normpath(s) not in map(os.path.normpath, ISA_SOURCES.values())]
    return sorted(regular) + sorted(isa_units)


def main():
    build_cuda, why = cuda_choice()
    cxx_flags = ["-O3", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
    link_flags = []
    if uses_openmp():
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    # Python's own CFLAGS carry -g; a release library does not need 25 MB of
    # debug sections. HEE_DEBUG=1 keeps them.
    if os.environ.get("HEE_DEBUG", "") in ("", "0"):
        cxx_flags.append("-g0")
    macros = [("Py_LIMITED_API", PY_LIMITED_API)]
    if not IS_X86_64:
        macros.append(("HEE_GENERIC_CPU_ONLY", None))

    # HEE_SANITIZE=1: an AddressSanitizer + UndefinedBehaviorSanitizer build for tests
    # (scripts/run_sanitized_tests.sh). The later -O1 overrides -O3. Python itself is not
    # instrumented, so the result only loads with libasan/libubsan in LD_PRELOAD.
    if os.environ.get("HEE_SANITIZE", "") not in ("", "0"):
        sanitizer_flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
        cxx_flags += sanitizer_flags
        link_flags += sanitizer_flags
        log("HEE_SANITIZE is set, building with " + " ".join(sanitizer_flags))

    sources = cpp_sources()
    log("CPU row kernels: " + (", ".join(ISA_SOURCES) if IS_X86_64 else "generic"))
    if build_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        extension = CUDAExtension(
            name="hybrid_entropy_ext._C",
            sources=sources,
            depends=build_dependencies(sources),
            include_dirs=pip_cuda_include_dirs(),
            define_macros=macros + [("HEE_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20"]},
            extra_link_args=link_flags,
            py_limited_api=True,
        )
        log(f"building the CUDA kernels: {why}; TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
    else:
        extension = CppExtension(
            name="hybrid_entropy_ext._C",
            sources=sources,
            depends=build_dependencies(sources),
            define_macros=macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
            py_limited_api=True,
        )
        log(f"building without CUDA kernels: {why}")
    write_build_info(build_cuda)

    setup(
        ext_modules=[extension],
        install_requires=[torch_requirement(), "numpy>=1.24", "PyYAML>=6"],
        cmdclass={"build_ext": BuildExtensionWithIsaFlags},
        options={"bdist_wheel": {"py_limited_api": ABI3_TAG}},
    )


if __name__ == "__main__":  # as pip and setuptools run it; tests import it
    main()
