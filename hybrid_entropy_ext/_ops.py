"""Loads the compiled op library and names its ops.

Importing ``hybrid_entropy_ext._C`` runs the library's ``TORCH_LIBRARY``
registrations: the ``hybrid_entropy_ext::hybrid_entropy_loss`` op, its backward
op, and their CPU, CUDA (where built), Meta (shape inference for
``torch.compile`` / ``torch.export``) and Autograd kernels, all in C++. Nothing
is registered from Python, so a TorchScript module that uses the op also runs,
backward included, in a C++ program that ``dlopen``s :func:`library_path`.

The library uses torch's C++ ABI, so it only loads into the torch it was built
against; that is checked first, with an error that says how to rebuild.
"""

import os

import torch


def _check_torch_version() -> None:
    try:
        from . import _build_info
    except ImportError:
        raise ImportError(
            "hybrid_entropy_ext: the compiled op library has not been built in this source tree; "
            "build it with `pip install --no-build-isolation -e .` (torch installed first)"
        ) from None
    built, running = _build_info.TORCH_VERSION, torch.__version__
    if built != running:
        package_dir = os.path.dirname(os.path.abspath(__file__))
        source = os.path.dirname(package_dir)
        in_checkout = os.path.exists(os.path.join(source, "setup.py"))
        rebuild = (
            f"pip install --no-build-isolation --no-deps --force-reinstall -e {source}"
            if in_checkout
            else "pip install --no-build-isolation --no-deps --force-reinstall <its source directory or sdist>"
        )
        public = built.split("+")[0]
        if running.split("+")[0] == public:
            # pip's torch==X accepts every build of X (+cpu, +cu130): name the build itself.
            install = f"the torch build it was built against ({built}, not {running})"
        else:
            install = f"torch=={public}"
        raise ImportError(
            f"hybrid_entropy_ext was built against torch {built}, but this process has torch "
            f"{running}. Its compiled library uses torch's C++ ABI and cannot be loaded with "
            f"another torch. Rebuild it against the installed torch ({rebuild}), or install "
            f"{install}."
        )


_check_torch_version()

from . import _C  # noqa: E402  (after the version check: a mismatched library may not even load)

__all__ = ["library_path", "cpu_isa", "cuda_kernels_built"]


def library_path() -> str:
    """Path of the compiled op library, for ``torch.ops.load_library`` or ``dlopen`` from C++."""
    return _C.__file__


def cpu_isa() -> str:
    """The CPU kernel build this process runs: ``"avx512"``, ``"avx2"`` or ``"generic"``.

    Chosen once, when the library loads, from the CPU's features; the
    environment variable ``HEE_CPU_ISA`` forces one and ``ATEN_CPU_CAPABILITY``
    (PyTorch's) caps the choice. Raises ``ValueError`` if ``HEE_CPU_ISA`` names
    an ISA this CPU cannot run.
    """
    return torch.ops.hybrid_entropy_ext.cpu_isa()


def _set_cpu_isa(isa: str) -> None:
    """Switches the CPU kernel build for the rest of the process (tests, comparisons).

    Raises ``ValueError`` if ``isa`` is not ``"generic"``, ``"avx2"`` or
    ``"avx512"``, or this CPU cannot run it.
    """
    torch.ops.hybrid_entropy_ext._set_cpu_isa(isa)


def cuda_kernels_built() -> bool:
    """Whether this build of the library holds CUDA kernels (``setup.py``'s choice)."""
    return torch.ops.hybrid_entropy_ext._cuda_kernels_built()
