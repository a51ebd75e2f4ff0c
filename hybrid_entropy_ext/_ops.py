"""Loads the compiled op library and names its ops.

Importing ``hybrid_entropy_ext._C`` runs the library's ``TORCH_LIBRARY``
registrations: the ``hybrid_entropy_ext::hybrid_entropy_loss`` op, its backward
op, and their CPU, Meta (shape inference for ``torch.compile`` /
``torch.export``) and Autograd kernels, all in C++. Nothing is registered from
Python, so a TorchScript module that uses the op also runs, backward included,
in a C++ program that ``dlopen``s :func:`library_path`.
"""

import torch

from . import _C

__all__ = ["library_path", "cpu_isa"]


def library_path() -> str:
    """Path of the compiled op library, for ``torch.ops.load_library`` or ``dlopen`` from C++."""
    return _C.__file__


def cpu_isa() -> str:
    """The CPU kernel build this process runs: ``"avx512"``, ``"avx2"`` or ``"generic"``.

    Chosen once per process from the CPU's features; the environment variable
    ``HEE_CPU_ISA`` forces one (for tests and comparisons).
    """
    return torch.ops.hybrid_entropy_ext.cpu_isa()
