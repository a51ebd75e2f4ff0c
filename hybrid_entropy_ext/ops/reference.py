"""The pure-PyTorch reference of the hybrid entropy loss.

Same signature, keys, dtypes and semantics as the fused
:func:`hybrid_entropy_ext.hybrid_entropy_loss`, written with ordinary tensor
ops so that autograd derives the backward. It is what users compare against,
what the tests hold the fused op to (beside ``torch.distributions``) and the
benchmarks' baseline. The library's own code does not call it. The entropies are
computed here with tensor ops; the loss terms from them are the library's
:func:`~hybrid_entropy_ext.ops.loss_terms.loss_terms_from_entropies`
(``loss_from_entropies`` here).
"""

import math
from typing import Dict, Optional, Union

import torch
from torch import Tensor

from .loss_terms import loss_terms_from_entropies

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


# The combination of the batch means, as the library writes it in Python (the tests hold
# both this module and the fused op to the float64 oracle of tests/oracle.py).
loss_from_entropies = loss_terms_from_entropies


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
