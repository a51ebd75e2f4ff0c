"""Shared fixtures.

``cpu_isa``: runs a test once per CPU kernel build this machine supports
(``generic``, ``avx2``, ``avx512``), switched with the library's internal
``_set_cpu_isa`` op. Correctness tests of the op take it (directly or via
``autouse``) so that every build passes the same specification.
"""

import contextlib

import pytest
import torch

from hybrid_entropy_ext import _ops

ALL_CPU_ISAS = ("generic", "avx2", "avx512")


DEFAULT_CPU_ISA = _ops.cpu_isa()


def _supported_cpu_isas():
    supported = []
    for isa in ALL_CPU_ISAS:
        try:
            _ops._set_cpu_isa(isa)
        except ValueError:
            continue
        supported.append(isa)
    _ops._set_cpu_isa(DEFAULT_CPU_ISA)
    return tuple(supported)


SUPPORTED_CPU_ISAS = _supported_cpu_isas()


@contextlib.contextmanager
def forced_cpu_isa(isa: str):
    """Runs the block with the CPU kernel build ``isa``, then restores the previous one."""
    previous = _ops.cpu_isa()
    _ops._set_cpu_isa(isa)
    try:
        yield isa
    finally:
        _ops._set_cpu_isa(previous)


@pytest.fixture(params=SUPPORTED_CPU_ISAS)
def cpu_isa(request):
    """Forces the CPU kernel build for one test; yields its name."""
    with forced_cpu_isa(request.param):
        assert _ops.cpu_isa() == request.param
        yield request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
