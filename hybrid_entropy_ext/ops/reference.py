"""The pure-PyTorch reference of the hybrid entropy loss.

Same signature, keys, dtypes and semantics as the fused
:func:`hybrid_entropy_ext.hybrid_entropy_loss`, written with ordinary tensor
ops so that autograd derives the backward. It is what users compare against,
what the tests hold the fused op to (beside ``torch.distributions``) and the
benchmarks' baseline. The library's own code does not call it: its combination
of the batch means is :mod:`~hybrid_entropy_ext.ops.loss_terms`, written apart.
"""

import math
from typing import Dict, Optional, Union

import torch
from torch import Tensor

__all__ = ["hybrid_entropy_loss", "loss_from_entropies", "discrete_row_entropy", "continuous_entropy"]

# Entropy of N(mu, sigma) per dimension is 0.5*log(2*pi*e) + log(sigma), nats.
GAUSSIAN_ENTROPY_CONSTANT = 0.5 * math.log(2.0 * math.pi * math.e)


def _accumulation_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def discrete_row_entropy(logits: Tensor) -> Tensor:
    """Entropy in nats of ``softmax(logits)`` per row: ``[B, K] -> [B]``.

    ``-inf`` logits get probability 0 and contribute 0 (and gradient 0). Their
    ``log p = -inf`` is replaced by 0, not clamped to the lowest finite value
    (as ``torch.distributions.Categorical`` does): the clamp's backward
    multiplies that value by the upstream gradient, which overflows to inf, and
    0 * inf poisons the whole row with NaN.

    A row whose every logit is ``-inf`` (a padded or terminal step) is a policy
    with no choice: entropy 0 and gradient 0, where ``log_softmax`` would give
    NaN. Such rows are evaluated on zeros and their entropy then replaced by 0,
    so that no NaN reaches the backward either.
    """
    z = logits.to(_accumulation_dtype(logits))
    all_masked = torch.isneginf(z).all(dim=-1, keepdim=True)
    z = torch.where(all_masked, 0.0, z)
    log_p = torch.log_softmax(z, dim=-1)
    log_p_masked = torch.where(torch.isneginf(log_p), 0.0, log_p)
    row_entropy = -(log_p.exp() * log_p_masked).sum(dim=-1)
    return torch.where(all_masked.squeeze(-1), 0.0, row_entropy)


def continuous_entropy(log_std: Tensor) -> Tensor:
    """Batch-mean entropy in nats of a diagonal Gaussian, ``[B, D]`` or ``[D]`` -> ``[]``."""
    per_sample = (log_std.to(_accumulation_dtype(log_std)) + GAUSSIAN_ENTROPY_CONSTANT).sum(dim=-1)
    return per_sample.mean() if log_std.dim() == 2 else per_sample


def _penalty(multiplier: float, threshold: Optional[float], entropy: Tensor, present: bool) -> Tensor:
    if threshold is None or not present:
        return torch.zeros_like(entropy)
    # relu has zero gradient at 0: the penalty is inactive at H == threshold.
    return multiplier * torch.relu(threshold - entropy)


def loss_from_entropies(
    discrete_entropy: Tensor,
    continuous_entropy: Tensor,
    entropy_coeff: Union[float, Tensor],
    discrete_entropy_weight: float = 1.0,
    continuous_entropy_weight: float = 0.5,
    min_entropy_threshold: Optional[float] = 0.1,
    continuous_min_entropy_threshold: Optional[float] = 0.1,
    penalty_multiplier: float = 3.0,
    has_discrete: bool = True,
    has_continuous: bool = True,
) -> Dict[str, Tensor]:
    """The seven components from the batch-mean entropies ``H_d``, ``H_c`` (0-dim, nats).

    ``entropy_coeff``: a float or 0-dim tensor for both heads, or a ``[2]`` tensor
    ``(discrete, continuous)``.

    ``has_discrete`` / ``has_continuous`` false: that head is absent and its
    penalty is 0 whatever the threshold.
    """
    if isinstance(entropy_coeff, Tensor):
        coeff = entropy_coeff.to(discrete_entropy.dtype)
        # shape [2]: one coefficient per head (discrete, continuous)
        discrete_coeff = coeff[0] if coeff.dim() == 1 else coeff
        continuous_coeff = coeff[1] if coeff.dim() == 1 else coeff
    else:
        discrete_coeff = continuous_coeff = entropy_coeff
    discrete = -discrete_coeff * discrete_entropy_weight * discrete_entropy
    continuous = -continuous_coeff * continuous_entropy_weight * continuous_entropy
    discrete_penalty = _penalty(penalty_multiplier, min_entropy_threshold, discrete_entropy, has_discrete)
    continuous_penalty = _penalty(
        penalty_multiplier, continuous_min_entropy_threshold, continuous_entropy, has_continuous
    )
    return {
        "total": discrete + continuous + discrete_penalty + continuous_penalty,
        "discrete": discrete,
        "continuous": continuous,
        "discrete_penalty": discrete_penalty,
        "continuous_penalty": continuous_penalty,
        "discrete_entropy": discrete_entropy,
        "continuous_entropy": continuous_entropy,
    }


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
    """Pure-PyTorch version of :func:`hybrid_entropy_ext.hybrid_entropy_loss`.

    Args and returns are the same: ``logits`` ``[B, K]`` or ``None``,
    ``log_std`` ``[B, D]``, ``[D]`` or ``None``, and a dict of seven 0-dim
    tensors (float64 if either head is float64, else float32).

    Example::

        >>> from hybrid_entropy_ext import reference
        >>> out = reference.hybrid_entropy_loss(torch.randn(8, 3), torch.zeros(8, 2), 0.01)
        >>> sorted(out)[:3]
        ['continuous', 'continuous_entropy', 'continuous_penalty']
    """
    if logits is None and log_std is None:
        raise ValueError("hybrid_entropy_loss: logits and log_std are both None; pass at least one head")
    heads = [t for t in (logits, log_std) if t is not None]
    out_dtype = torch.float64 if any(t.dtype == torch.float64 for t in heads) else torch.float32
    zero = torch.zeros((), dtype=out_dtype, device=heads[0].device)
    h_d = discrete_row_entropy(logits).mean().to(out_dtype) if logits is not None else zero
    h_c = continuous_entropy(log_std).to(out_dtype) if log_std is not None else zero
    return loss_from_entropies(
        h_d,
        h_c,
        entropy_coeff,
        discrete_entropy_weight,
        continuous_entropy_weight,
        min_entropy_threshold,
        continuous_min_entropy_threshold,
        penalty_multiplier,
        has_discrete=logits is not None,
        has_continuous=log_std is not None,
    )
