"""The fused hybrid entropy loss: one C++/CUDA op, exact backward.

``hybrid_entropy_loss`` is a thin wrapper around the compiled op
``torch.ops.hybrid_entropy_ext.hybrid_entropy_loss``; it turns a Python float
coefficient into a tensor and names the outputs. It is plain TorchScript-able
Python: scripted code can call it, and it traces under ``torch.compile`` and
``torch.export`` with no graph break.
"""

from typing import Dict, Optional, Union

import torch
from torch import Tensor

from .. import _ops  # noqa: F401  (registers the ops)
from .._validation import is_real, real_to_float

__all__ = ["hybrid_entropy_loss"]


def _coefficient_as_float(entropy_coeff: object) -> float:
    """A coefficient that is not a tensor, as the float the op gets.

    Any real number (NumPy scalars included, as a NumPy-based config hands them over),
    but not a bool (NumPy's included): True as a coefficient is a misplaced flag, not 1.
    """
    # A Python float, the common case, skips the checks: at small batch sizes their
    # isinstance tests against the numbers ABCs cost a measurable share of the call.
    if type(entropy_coeff) is float:
        return entropy_coeff
    if not is_real(entropy_coeff):
        raise TypeError(
            "hybrid_entropy_loss: entropy_coeff must be a Python float or a floating tensor "
            f"(0-dim, or [2] for one coefficient per head), got {type(entropy_coeff).__name__}"
        )
    # The number every entry point reads: np.float32(0.01) is 0.01, the decimal it
    # prints as (as the schedules, the config and the controller read it).
    return real_to_float(entropy_coeff)


def hybrid_entropy_loss(
    logits: Optional[Tensor],
    log_std: Optional[Tensor],
    entropy_coeff: Union[float, Tensor],
    discrete_entropy_weight: float = 1.0,
    continuous_entropy_weight: float = 0.5,
    min_entropy_threshold: Optional[float] = 0.1,
    continuous_min_entropy_threshold: Optional[float] = 0.1,
    penalty_multiplier: float = 3.0,
) -> Dict[str, Tensor]:
    """Entropy bonus and collapse penalties of a hybrid-action policy, fused.

    ``H_d`` and ``H_c`` are the batch means of the categorical and the Gaussian head's
    entropies in nats. Each head's term is ``-c * w * H`` and its collapse penalty
    ``m * max(0, tau - H)``; ``total`` is their sum. docs/design.md, "Semantics", gives
    the formula, its edge values and dtypes.

    Args:
        logits: ``[B, K]`` unnormalized log-probabilities of the discrete head
            (float32, float64, bfloat16 or float16; any strides). ``-inf``
            marks an impossible action (probability 0, gradient 0). ``None``
            for a purely continuous policy.
        log_std: ``[B, D]`` log standard deviations of the Gaussian head, or
            ``[D]`` shared by the batch. ``None`` for a purely discrete policy.
        entropy_coeff: ``c``, a Python float or a 0-dim floating tensor (on the
            inputs' device or the CPU); a tensor that requires grad gets one.
            A NumPy scalar is read as the rest of the package reads it: a float32
            or float16 one as the decimal it prints as (``np.float32(0.01)`` is
            0.01, not 0.009999999776482582).
            A ``[2]`` tensor gives each head its own coefficient,
            ``(c_d, c_c)``: ``discrete = -c_d * w_d * H_d`` and
            ``continuous = -c_c * w_c * H_c`` (its gradient is ``[2]`` too).
        discrete_entropy_weight: ``w_d``, weight of the discrete entropy.
        continuous_entropy_weight: ``w_c``, weight of the continuous entropy.
        min_entropy_threshold: ``tau_d`` in nats; the discrete penalty is
            active only while ``H_d < tau_d``. ``None`` disables it.
        continuous_min_entropy_threshold: ``tau_c`` in nats, likewise for the
            continuous head. ``None`` disables it.
        penalty_multiplier: ``m``, slope of both penalties.

    Returns:
        A dict of 0-dim tensors with keys ``total``, ``discrete``,
        ``continuous``, ``discrete_penalty``, ``continuous_penalty``,
        ``discrete_entropy`` (``H_d``) and ``continuous_entropy`` (``H_c``).
        float64 if either head is float64, else float32. Every output is
        differentiable; a missing head contributes 0 and gets no gradient.
        The gradient w.r.t. ``log_std`` is one value for every element and
        comes back broadcast to ``log_std``'s shape with stride 0, as the
        backward of ``torch.sum`` and ``torch.mean`` does (``log_std.grad``
        after ``backward()`` is an ordinary dense tensor).

    Raises:
        ValueError: a shape problem (logits not 2-D, log_std not 1-D/2-D,
            different batch sizes, an empty batch, zero actions), inputs on
            different devices, both heads ``None``, a non-finite weight.
        TypeError: a non-floating tensor or a non-number coefficient.

    Example::

        >>> logits = torch.randn(32, 6, requires_grad=True)
        >>> log_std = torch.zeros(4, requires_grad=True)
        >>> out = hybrid_entropy_loss(logits, log_std, 0.01)
        >>> out["total"].backward()
    """
    if isinstance(entropy_coeff, Tensor):
        coeff = entropy_coeff
    elif torch.jit.is_scripting():
        coeff = torch.scalar_tensor(float(entropy_coeff), dtype=torch.float64)
    else:
        coeff = torch.scalar_tensor(_coefficient_as_float(entropy_coeff), dtype=torch.float64)
    outputs = torch.ops.hybrid_entropy_ext.hybrid_entropy_loss(
        logits,
        log_std,
        coeff,
        discrete_entropy_weight,
        continuous_entropy_weight,
        min_entropy_threshold,
        continuous_min_entropy_threshold,
        penalty_multiplier,
    )
    return {
        "total": outputs[0],
        "discrete": outputs[1],
        "continuous": outputs[2],
        "discrete_penalty": outputs[3],
        "continuous_penalty": outputs[4],
        "discrete_entropy": outputs[5],
        "continuous_entropy": outputs[6],
    }
