"""The loss terms from the two batch-mean entropies: the combination of the hybrid entropy loss.

With the batch means ``H_d``, ``H_c`` (nats) in hand, the seven outputs of
:func:`~hybrid_entropy_ext.hybrid_entropy_loss` follow from the formula of
docs/design.md, "Semantics". The fused op evaluates it in its kernels
(``csrc/entropy_math.h``). This module is the library's Python form of it, for means that
do not come from one op call: the global means of the distributed regularizer, the CLI's
report at given entropies, and the pure-PyTorch reference
(:mod:`~hybrid_entropy_ext.ops.reference`). Tensor operations only, so autograd
differentiates it; the tests hold it to the float64 oracle of tests/oracle.py.
"""

import math
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["loss_terms_from_entropies", "loss_terms_from_head_entropies", "collapse_penalty", "check_sub_heads"]


def collapse_penalty(entropy: Tensor, threshold: Optional[float], multiplier: float) -> Tensor:
    """``multiplier * max(0, threshold - entropy)``; zeros like ``entropy`` when ``threshold`` is ``None``.

    0 with gradient 0 at ``entropy == threshold`` (``relu``'s gradient at 0), NaN for a
    NaN entropy (never a silent 0).
    """
    if threshold is None:
        return torch.zeros_like(entropy)
    return multiplier * torch.relu(threshold - entropy)


def loss_terms_from_entropies(
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
    """The seven 0-dim outputs of the loss from the batch-mean entropies ``H_d``, ``H_c``.

    Args:
        discrete_entropy, continuous_entropy: ``H_d`` and ``H_c``, 0-dim floating
            tensors in nats, of one dtype (the outputs' dtype).
        entropy_coeff: ``c``, a float or 0-dim tensor for both heads, or a ``[2]``
            tensor ``(c_d, c_c)``; a tensor is cast to the entropies' dtype first.
        discrete_entropy_weight, continuous_entropy_weight, min_entropy_threshold,
        continuous_min_entropy_threshold, penalty_multiplier: ``w_d``, ``w_c``,
            ``tau_d``, ``tau_c`` (``None``: no penalty), ``m``, as for
            :func:`~hybrid_entropy_ext.hybrid_entropy_loss`.
        has_discrete, has_continuous: ``False`` for a head the policy does not have:
            its penalty is 0 whatever its threshold (its entropy, 0, would be below it).

    Returns:
        A dict with keys ``total``, ``discrete``, ``continuous``, ``discrete_penalty``,
        ``continuous_penalty``, ``discrete_entropy``, ``continuous_entropy`` (the two
        inputs themselves), differentiable with respect to the entropies and a tensor
        coefficient.

    Example::

        >>> out = loss_terms_from_entropies(torch.tensor(0.05), torch.tensor(1.0), 0.01)
        >>> round(out["discrete_penalty"].item(), 6)   # 3 * (0.1 - 0.05)
        0.15
    """
    if isinstance(entropy_coeff, Tensor):
        coeff = entropy_coeff.to(discrete_entropy.dtype)
        per_head = coeff.dim() == 1  # [2]: (c_d, c_c)
        discrete_coeff = coeff[0] if per_head else coeff
        continuous_coeff = coeff[1] if per_head else coeff
    else:
        discrete_coeff = continuous_coeff = entropy_coeff
    discrete = -discrete_coeff * discrete_entropy_weight * discrete_entropy
    continuous = -continuous_coeff * continuous_entropy_weight * continuous_entropy
    discrete_penalty = collapse_penalty(
        discrete_entropy, min_entropy_threshold if has_discrete else None, penalty_multiplier
    )
    continuous_penalty = collapse_penalty(
        continuous_entropy, continuous_min_entropy_threshold if has_continuous else None, penalty_multiplier
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


def check_sub_heads(
    discrete_sizes: Optional[Sequence[int]],
    discrete_head_thresholds: Optional[Sequence[float]],
    num_columns: Optional[int],
    op: str = "hybrid_entropy_loss",
) -> None:
    """The checks the fused ops make of their sub-head arguments (``csrc/checks.cpp``), for
    the Python paths that split the logits themselves: sizes > 0 summing to the logits'
    ``num_columns`` (``None``: no logits), one finite threshold per sub-head, thresholds only
    with sizes. Raises ``ValueError`` naming ``op``."""
    if discrete_sizes is not None:
        sizes = [int(k) for k in discrete_sizes]
        if num_columns is None:
            raise ValueError(f"{op}: discrete_sizes splits the logits into sub-heads, but there are no logits")
        if not sizes or min(sizes) <= 0 or sum(sizes) != num_columns:
            raise ValueError(f"{op}: discrete_sizes must be positive and sum to K = {num_columns}, got {sizes}")
    if discrete_head_thresholds is None:
        return
    if discrete_sizes is None:
        raise ValueError(
            f"{op}: discrete_head_thresholds are the thresholds of the sub-heads of "
            "discrete_sizes, which is not given (one head's threshold is min_entropy_threshold)"
        )
    if len(discrete_head_thresholds) != len(discrete_sizes):
        raise ValueError(
            f"{op}: discrete_head_thresholds must have one threshold per discrete sub-head "
            f"({len(discrete_sizes)}), got {len(discrete_head_thresholds)}"
        )
    if not all(math.isfinite(tau) for tau in discrete_head_thresholds):
        raise ValueError(f"{op}: discrete_head_thresholds must be finite, got {list(discrete_head_thresholds)}")


def loss_terms_from_head_entropies(
    head_entropies: List[Tensor],
    continuous_entropy: Tensor,
    entropy_coeff: Union[float, Tensor],
    discrete_entropy_weight: float = 1.0,
    continuous_entropy_weight: float = 0.5,
    min_entropy_threshold: Optional[float] = 0.1,
    continuous_min_entropy_threshold: Optional[float] = 0.1,
    penalty_multiplier: float = 3.0,
    has_continuous: bool = True,
    head_thresholds: Optional[List[float]] = None,
) -> Dict[str, Tensor]:
    """The seven outputs of a discrete head of sub-heads (``discrete_sizes``), and
    ``discrete_entropy_per_head``, from each sub-head's batch entropy ``H_h``.

    ``H_d = sum_h H_h`` and the discrete penalty is ``m * sum_h max(0, tau_h - H_h)``, with
    ``tau_h`` from ``head_thresholds`` (one per sub-head) or else ``min_entropy_threshold``
    for every sub-head (docs/design.md, "Sub-heads"); everything else as
    :func:`loss_terms_from_entropies`. ``discrete_entropy_per_head`` ``[H]`` is detached, as
    the fused op's is.

    Example::

        >>> out = loss_terms_from_head_entropies([torch.tensor(0.05), torch.tensor(2.0)],
        ...                                      torch.tensor(1.0), 0.01)
        >>> round(out["discrete_penalty"].item(), 6)   # 3 * (0.1 - 0.05): the second is above
        0.15
    """
    discrete_entropy = head_entropies[0]
    for h in head_entropies[1:]:
        discrete_entropy = discrete_entropy + h
    out = loss_terms_from_entropies(
        discrete_entropy,
        continuous_entropy,
        entropy_coeff,
        discrete_entropy_weight,
        continuous_entropy_weight,
        None,
        continuous_min_entropy_threshold,
        penalty_multiplier,
        has_discrete=True,
        has_continuous=has_continuous,
    )
    thresholds: List[Optional[float]] = []
    for h in range(len(head_entropies)):
        thresholds.append(head_thresholds[h] if head_thresholds is not None else min_entropy_threshold)
    penalty = collapse_penalty(head_entropies[0], thresholds[0], penalty_multiplier)
    for h in range(1, len(head_entropies)):
        penalty = penalty + collapse_penalty(head_entropies[h], thresholds[h], penalty_multiplier)
    out["total"] = out["discrete"] + out["continuous"] + penalty + out["continuous_penalty"]
    out["discrete_penalty"] = penalty
    out["discrete_entropy_per_head"] = torch.stack(head_entropies).detach()
    return out
