"""Shared fixtures.

``cpu_isa``: runs a test once per CPU kernel build this machine supports
(``generic``, ``avx2``, ``avx512``), switched with the library's internal
``_set_cpu_isa`` op.

``backend``: the same CPU builds, and CUDA where a GPU is present (a skipped case where
not, as torchvision's ``cpu_and_cuda()``); yields the device the op runs on. Correctness
tests of the op take it (directly or via ``autouse``) so that every backend passes the
same specification, and call the op through :func:`run_on`, which moves their CPU
inputs to that device and the outputs back, differentiably: the test body, its oracle
and its gradients stay on the CPU whatever the backend.
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


CUDA_AVAILABLE = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device")


def cpu_and_cuda():
    """Devices to parametrize a test over: the CPU, and CUDA (skipped without a GPU)."""
    return ("cpu", pytest.param("cuda", marks=needs_cuda))


BACKENDS = tuple(f"cpu-{isa}" for isa in SUPPORTED_CPU_ISAS) + (pytest.param("cuda", marks=needs_cuda),)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs a test once per CPU kernel build and once on CUDA; yields the op's device."""
    if request.param == "cuda":
        yield "cuda"
        return
    with forced_cpu_isa(request.param[len("cpu-"):]):
        yield "cpu"


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def run_on(device, fn, *args, **kwargs):
    """fn with its tensor arguments moved to ``device`` and its tensor results moved back to
    the CPU (``.to`` is differentiable, so gradients reach the CPU leaves). On the CPU it is
    fn itself."""
    if device == "cpu":
        return fn(*args, **kwargs)
    result = fn(*[_to(a, device) for a in args], **{k: _to(v, device) for k, v in kwargs.items()})
    if isinstance(result, dict):
        return {k: _to(v, "cpu") for k, v in result.items()}
    if isinstance(result, (tuple, list)):
        return type(result)(_to(v, "cpu") for v in result)
    return _to(result, "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
