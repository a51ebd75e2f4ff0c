"""Helpers shared by the tests (as PyTorch's ``torch/testing/_internal/common_utils.py``).

Test files import from here (``from common_utils import ...``, the way they import
``oracle``); ``conftest.py`` holds only pytest fixtures and hooks. The op variants the
tests iterate are in ``op_variants.py``, the float64 oracle in ``oracle.py``.

- Backends: the CPU kernel builds this machine supports (``SUPPORTED_CPU_ISAS``), switched
  with the library's internal ``_set_cpu_isa`` op (:func:`forced_cpu_isa`), and CUDA where a
  GPU is present; :func:`on_backend` runs a block on one of them.
- Devices: :func:`run_on` / :func:`fused_loss_on` run a callable on a device with CPU
  tensors in and out, differentiably: a test body, its oracle and its gradients stay on the
  CPU whatever the backend.
- Inputs: :func:`random_heads`, the one maker of random logits and log_std.
- Tolerances and error models: ``VALUE_TOLERANCES``, ``GRAD_TOLERANCES``,
  ``UNIT_ROUNDOFF``, :func:`acc_roundoff`, :func:`entropy_tolerance`,
  :func:`subnormal_spacing`.
- Comparisons of loss dicts: :func:`assert_outputs_equal`, :func:`assert_outputs_close`;
  of gradient rows: :func:`assert_rows_close`.
- A small policy that trains through the regularizer (:class:`TinyHybridPolicy`) and the
  outputs and parameter gradients of a module's step (:func:`module_outputs_and_grads`);
  how far two RL models' policies are apart (:func:`max_parameter_difference`).
"""

import contextlib
import math
import os
from typing import Callable, Dict, Optional, Tuple

import pytest
import torch
from torch import Tensor, nn

from hybrid_entropy_ext import _ops
from hybrid_entropy_ext import EntropyRegularizationConfig, HybridEntropyRegularizer, hybrid_entropy_loss

# --------------------------------------------------------------------------------------
# Backends: CPU kernel builds and CUDA
# --------------------------------------------------------------------------------------

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


CUDA_AVAILABLE = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device")


def cpu_and_cuda():
    """Devices to parametrize a test over: the CPU, and CUDA (skipped without a GPU)."""
    return ("cpu", pytest.param("cuda", marks=needs_cuda))


# A backend is a CPU kernel build ("cpu-generic", "cpu-avx2", "cpu-avx512") or "cuda".
CPU_BACKENDS = tuple(f"cpu-{isa}" for isa in SUPPORTED_CPU_ISAS)
# To parametrize over (the ``backend`` fixture): CUDA is a skipped case without a GPU.
BACKEND_PARAMS = CPU_BACKENDS + (pytest.param("cuda", marks=needs_cuda),)
# To draw from (hypothesis): CUDA only where a GPU is present.
AVAILABLE_BACKENDS = CPU_BACKENDS + (("cuda",) if CUDA_AVAILABLE else ())


@contextlib.contextmanager
def on_backend(backend: str):
    """Runs the block with the op on ``backend`` (a CPU build is forced); yields its device."""
    if backend == "cuda":
        yield "cuda"
        return
    assert backend.startswith("cpu-"), backend
    with forced_cpu_isa(backend[len("cpu-"):]):
        yield "cpu"


# --------------------------------------------------------------------------------------
# Devices: CPU tensors in and out
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def seeded_heads(b: int, k: int, d: int = 3, dtype: torch.dtype = torch.float32, seed: int = 0):
    """Logits ``[b, k]`` (scale 2) and log_std ``[b, d]`` (scale 0.3) of ``dtype``, drawn in
    float64 from ``seed`` and rounded once."""
    generator = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(b, k, generator=generator, dtype=torch.float64)).to(dtype)
    log_std = (0.3 * torch.randn(b, d, generator=generator, dtype=torch.float64)).to(dtype)
    return logits, log_std


def random_heads(b: int = 6, k: int = 5, d: int = 3, dtype: torch.dtype = torch.float32,
                 log_std_dtype: Optional[torch.dtype] = None, *, seed: Optional[int] = 0,
                 logits_scale: float = 2.0, log_std_scale: float = 0.3, log_std_shift: float = 0.0,
                 shared_log_std: bool = False, device="cpu", requires_grad: bool = False
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random logits ``[b, k]`` and log_std ``[b, d]`` (``[d]`` with ``shared_log_std``).

    Drawn in float64, ``logits_scale * N(0, 1)`` then ``log_std_shift + log_std_scale *
    N(0, 1)``, and rounded to ``dtype`` (log_std to ``log_std_dtype``, by default
    ``dtype``); on ``device``, leaves that require grad if ``requires_grad``.

    ``seed``: the values come from a fresh generator seeded with it, the same on every call;
    ``None`` draws from the global generator (seeded per test by conftest.py), so successive
    calls in a test differ.
    """
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    logits = logits_scale * torch.randn(b, k, generator=gen, dtype=torch.float64)
    log_std_shape = (d,) if shared_log_std else (b, d)
    log_std = log_std_shift + log_std_scale * torch.randn(log_std_shape, generator=gen, dtype=torch.float64)
    logits = logits.to(dtype=dtype, device=device).requires_grad_(requires_grad)
    log_std = log_std.to(dtype=log_std_dtype or dtype, device=device).requires_grad_(requires_grad)
    return logits, log_std


# --------------------------------------------------------------------------------------
# Tolerances and error models
# --------------------------------------------------------------------------------------

# Another backend's outputs against the CPU op's, by the accumulation dtype: both sum in
# their own orders (and a GPU contracts into FMAs).
VALUE_TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-6)}
# Gradients, by the input dtype: a 16-bit gradient is itself rounded to its 8 or 11
# significand bits.
GRAD_TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-14), torch.float32: dict(rtol=1e-4, atol=1e-8),
                   torch.bfloat16: dict(rtol=2e-2, atol=1e-5), torch.float16: dict(rtol=4e-3, atol=1e-6)}

# Unit roundoff u of each input dtype: 2^-53 float64, 2^-24 float32, and the 16-bit
# formats' 8 (bfloat16) and 11 (float16) significand bits.
UNIT_ROUNDOFF = {
    torch.float64: 2.0 ** -53,
    torch.float32: 2.0 ** -24,
    torch.bfloat16: 2.0 ** -8,
    torch.float16: 2.0 ** -11,
}
HALF_DTYPES = (torch.bfloat16, torch.float16)


def acc_roundoff(dtype: torch.dtype) -> float:
    """Unit roundoff of the accumulation type (docs/design.md, "Dtypes"): float64 for
    float64, else float32."""
    return UNIT_ROUNDOFF[torch.float64 if dtype == torch.float64 else torch.float32]


def entropy_tolerance(dtype: torch.dtype, k: int, h: float) -> float:
    """Error bound of a row entropy ``h`` over ``k`` logits of ``dtype`` (or of their batch
    mean): ``4 u_acc (4 + sqrt(K)) (1 + |H| + log K)``, the error model of
    test_properties.py's docstring."""
    return 4 * acc_roundoff(dtype) * (4 + math.sqrt(k)) * (1 + abs(h) + math.log(k))


def subnormal_spacing(dtype: torch.dtype) -> float:
    """Absolute rounding step below the smallest normal number of dtype."""
    return torch.finfo(dtype).tiny * 2 * UNIT_ROUNDOFF[dtype]


def loss_params_as_doubles(discrete_weight, continuous_weight, discrete_threshold, continuous_threshold,
                           multiplier):
    """The hyper-parameters as the seven doubles tests/cpp/loss_params_array.h reads:
    w_d, w_c, has tau_d, tau_d, has tau_c, tau_c, m."""
    return [float(discrete_weight), float(continuous_weight), float(discrete_threshold is not None),
            float(discrete_threshold or 0.0), float(continuous_threshold is not None),
            float(continuous_threshold or 0.0), float(multiplier)]


# --------------------------------------------------------------------------------------
# Comparisons of loss dicts
# --------------------------------------------------------------------------------------


def assert_rows_close(got: Tensor, expected: Tensor, rtol: float, atol: float) -> None:
    """Each element of ``got`` ``[..., K]`` within ``atol + rtol * m`` of ``expected``, with
    ``m`` the largest magnitude in its row of ``expected``: the error model of a gradient
    whose elements are differences of terms as large as the row's largest (a per-token
    gradient, ``-p (g_a + g_h (log p + h)) + g_a [k = a]``), where one element's own
    size says nothing of its rounding."""
    got, expected = got.double(), expected.double()
    row_scale = expected.abs().amax(dim=-1, keepdim=True)
    excess = (got - expected).abs() - (atol + rtol * row_scale)
    assert not (excess > 0).any(), (
        f"{int((excess > 0).sum())} of {excess.numel()} elements beyond the row-scaled tolerance "
        f"(rtol {rtol}, atol {atol}); worst excess {excess.max().item():.3g}"
    )


def assert_outputs_equal(got: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor]) -> None:
    """The same keys, and every value bitwise equal."""
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def assert_outputs_close(got: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor], **tolerances) -> None:
    """The same keys, and every value close (``torch.testing.assert_close`` with
    ``tolerances``, its own defaults when none are given)."""
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, **tolerances, msg=key)


class LinearDecay(nn.Module):
    """A user schedule (scriptable) that goes negative after episode 5: what the
    regularizer must refuse in every mode rather than turn the bonus into a penalty."""

    def forward(self, episode: int) -> float:
        return 0.05 - 0.01 * episode


# --------------------------------------------------------------------------------------
# A policy module that trains through the regularizer
# --------------------------------------------------------------------------------------


class TinyHybridPolicy(nn.Module):
    """A policy with a discrete head (Linear layers -> [B, K] logits) and a state-independent
    Gaussian head (a [D] log_std Parameter), regularized by a HybridEntropyRegularizer: by
    default the ``short`` preset with penalty thresholds above the initial entropies
    (H_d <= log 4, H_c = 2 * (1.419 - 0.5)), so that both collapse penalties are active and
    their gradients are part of what is compared. TorchScript-able."""

    def __init__(self, regularizer: Optional[HybridEntropyRegularizer] = None, obs_dim: int = 6,
                 num_actions: int = 4, action_dim: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, 16), nn.Tanh())
        self.logits_head = nn.Linear(16, num_actions)
        self.log_std = nn.Parameter(torch.full((action_dim,), -0.5))
        if regularizer is None:
            regularizer = HybridEntropyRegularizer(
                EntropyRegularizationConfig.preset("short"),
                min_entropy_threshold=2.0,
                continuous_min_entropy_threshold=3.0,
            )
        self.regularizer = regularizer

    def forward(self, obs: Tensor, episode: int) -> Dict[str, Tensor]:
        return self.regularizer(self.logits_head(self.body(obs)), self.log_std, episode)


def module_outputs_and_grads(module: nn.Module, call: Callable[[], Dict[str, Tensor]]):
    """``call()`` (a step of ``module``) after zeroing its gradients, then backward of its
    ``total``: the outputs, detached, and every parameter's gradient, by name."""
    module.zero_grad(set_to_none=True)
    out = call()
    out["total"].backward()
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters()}
    return {k: v.detach() for k, v in out.items()}, grads


# --------------------------------------------------------------------------------------
# Slow tests
# --------------------------------------------------------------------------------------

RUN_SLOW = os.environ.get("HEE_RUN_SLOW", "") == "1"


def slow(test):
    """Marks a test slow and skips it unless HEE_RUN_SLOW=1."""
    skip_unless_asked = pytest.mark.skipif(not RUN_SLOW, reason="slow: set HEE_RUN_SLOW=1 to run")
    return pytest.mark.slow(skip_unless_asked(test))


def max_parameter_difference(model_a, model_b) -> float:
    """The largest absolute difference between two RL models' policy parameters (SB3-style
    models: ``model.policy.parameters()`` in the same order)."""
    return max((p - q).abs().max().item() for p, q in zip(model_a.policy.parameters(), model_b.policy.parameters()))
