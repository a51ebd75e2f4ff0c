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
from hybrid_entropy_ext import hybrid_entropy_loss

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


def to_device(value, device):
    """``value`` moved to ``device`` if it is a tensor (differentiably); anything else as is."""
    return value.to(device) if isinstance(value, torch.Tensor) else value


def run_on(device, fn, *args, **kwargs):
    """fn with its tensor arguments moved to ``device`` and its tensor results moved back to
    the CPU (``.to`` is differentiable, so gradients reach the CPU leaves). On the CPU it is
    fn itself."""
    if device == "cpu":
        return fn(*args, **kwargs)
    result = fn(*[to_device(a, device) for a in args], **{k: to_device(v, device) for k, v in kwargs.items()})
    if isinstance(result, dict):
        return {k: to_device(v, "cpu") for k, v in result.items()}
    if isinstance(result, (tuple, list)):
        return type(result)(to_device(v, "cpu") for v in result)
    return to_device(result, "cpu")


def fused_loss_on(device, *args, **kwargs):
    """``hee.hybrid_entropy_loss`` run on ``device`` with CPU tensors in and out (run_on)."""
    return run_on(device, hybrid_entropy_loss, *args, **kwargs)


def random_heads(b, k, d, dtype=torch.float32, log_std_dtype=None, seed=0):
    """CPU logits [b, k] and log_std [b, d], drawn in float64 and rounded to their dtypes."""
    gen = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(b, k, generator=gen, dtype=torch.float64)).to(dtype)
    log_std = (0.3 * torch.randn(b, d, generator=gen, dtype=torch.float64)).to(log_std_dtype or dtype)
    return logits, log_std


# Another backend's outputs against the CPU op's, by the accumulation dtype: both sum in
# their own orders (and a GPU contracts into FMAs).
VALUE_TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-6)}
# Gradients, by the input dtype: a 16-bit gradient is itself rounded to its 8 or 11
# significand bits.
GRAD_TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-14), torch.float32: dict(rtol=1e-4, atol=1e-8),
                   torch.bfloat16: dict(rtol=2e-2, atol=1e-5), torch.float16: dict(rtol=4e-3, atol=1e-6)}


def loss_params_as_doubles(discrete_weight, continuous_weight, discrete_threshold, continuous_threshold,
                           multiplier):
    """The hyper-parameters as the seven doubles tests/cpp/loss_params_array.h reads:
    w_d, w_c, has tau_d, tau_d, has tau_c, tau_c, m."""
    return [float(discrete_weight), float(continuous_weight), float(discrete_threshold is not None),
            float(discrete_threshold or 0.0), float(continuous_threshold is not None),
            float(continuous_threshold or 0.0), float(multiplier)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
