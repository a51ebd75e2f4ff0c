"""Shared fixtures.

``cpu_isa``: runs a test once per CPU kernel build this machine supports
(``generic``, ``avx2``, ``avx512``), forced with ``HEE_CPU_ISA``. Correctness
tests of the op take it (directly or via ``autouse``) so that every build passes
the same specification.
"""

import pytest
import torch

from hybrid_entropy_ext import _ops

ALL_CPU_ISAS = ("generic", "avx2", "avx512")


def _supported_cpu_isas():
    supported = []
    for isa in ALL_CPU_ISAS:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HEE_CPU_ISA", isa)
            try:
                _ops.cpu_isa()
            except ValueError:
                continue
        supported.append(isa)
    return tuple(supported)


SUPPORTED_CPU_ISAS = _supported_cpu_isas()


@pytest.fixture(params=SUPPORTED_CPU_ISAS)
def cpu_isa(request, monkeypatch):
    """Forces the CPU kernel build for one test; yields its name."""
    monkeypatch.setenv("HEE_CPU_ISA", request.param)
    assert _ops.cpu_isa() == request.param
    yield request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
