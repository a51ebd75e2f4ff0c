"""The independent oracle the tests hold the op to.

The loss formulas of docs/design.md applied to entropies from ``torch.distributions``
(``Categorical``, ``Normal``), in float64, with autograd for the gradients. It
shares no code with the library (neither the kernels nor ``hee.reference``).
"""

import math
from typing import Dict, Optional

import torch
from torch.distributions import Categorical, Normal

# The op's output keys, in schema order.
KEYS = (
    "total",
    "discrete",
    "continuous",
    "discrete_penalty",
    "continuous_penalty",
    "discrete_entropy",
    "continuous_entropy",
)

# Distinct weights of the seven outputs (cotangents of a weighted sum of all of them), so
# that a swapped or dropped output shows in a gradient.
OUTPUT_WEIGHTS = dict(zip(KEYS, (1.0, -2.0, 3.0, 0.5, -1.5, 0.25, 0.75)))

# Entropy of one dimension of N(mu, exp(c)) in nats is HALF_LOG_2PI_E + c.
HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


def distributions_oracle(
    logits: Optional[torch.Tensor],
    log_std: Optional[torch.Tensor],
    entropy_coeff,
    discrete_entropy_weight: float = 1.0,
    continuous_entropy_weight: float = 0.5,
    min_entropy_threshold: Optional[float] = 0.1,
    continuous_min_entropy_threshold: Optional[float] = 0.1,
    penalty_multiplier: float = 3.0,
    row_weights: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """The seven outputs, from ``Categorical`` / ``Normal`` entropies, in float64.

    ``row_weights`` [B]: the batch means become weighted means, sum_i w_i h_i / sum_i w_i.
    """
    weights = None if row_weights is None else row_weights.double()

    def batch_mean(per_row):
        return per_row.mean() if weights is None else (weights * per_row).sum() / weights.sum()

    zero = torch.zeros((), dtype=torch.float64)
    if logits is not None:
        logits = logits.double()
        # A row with every action masked is a policy with no choice: one action of
        # probability 1 (entropy 0, and no gradient: the stand-in logit is a constant).
        all_masked = (logits == -math.inf).all(dim=-1)
        if all_masked.any():
            first_action = torch.zeros_like(logits, dtype=torch.bool)
            first_action[:, 0] = True
            logits = torch.where(all_masked[:, None] & first_action, torch.zeros_like(logits), logits)
        # -inf -> (smallest finite logit - 1000): exp(-1000) is exactly 0 in float64, so the
        # entropy and the gradient are those of the unmasked actions, and masked ones get
        # exactly 0. Categorical's own handling (clamping to finfo.min) gives NaN gradients
        # as soon as the upstream gradient exceeds 1: finfo.min * 1.5 overflows.
        masked = logits == -math.inf
        if masked.any():
            floor = logits.detach()[~masked].min() - 1000.0
            logits = torch.where(masked, floor, logits)
        h_d = batch_mean(Categorical(logits=logits).entropy())
    else:
        h_d = zero
    if log_std is not None:
        ls = log_std.double()
        per_sample = Normal(torch.zeros_like(ls), ls.exp()).entropy().sum(-1)
        h_c = batch_mean(per_sample) if ls.dim() == 2 else per_sample
    else:
        h_c = zero
    if isinstance(entropy_coeff, torch.Tensor) and entropy_coeff.dim() == 1:
        c_d, c_c = entropy_coeff.double().unbind()
    else:
        c_d = c_c = entropy_coeff.double() if isinstance(entropy_coeff, torch.Tensor) else float(entropy_coeff)

    def penalty(threshold, entropy, present):
        if threshold is None or not present:
            return zero
        gap = threshold - entropy
        # Strictly zero (value and gradient) unless entropy < threshold.
        return penalty_multiplier * torch.where(gap > 0, gap, torch.zeros_like(gap))

    discrete = -c_d * discrete_entropy_weight * h_d
    continuous = -c_c * continuous_entropy_weight * h_c
    discrete_penalty = penalty(min_entropy_threshold, h_d, logits is not None)
    continuous_penalty = penalty(continuous_min_entropy_threshold, h_c, log_std is not None)
    return {
        "total": discrete + continuous + discrete_penalty + continuous_penalty,
        "discrete": discrete,
        "continuous": continuous,
        "discrete_penalty": discrete_penalty,
        "continuous_penalty": continuous_penalty,
        "discrete_entropy": h_d,
        "continuous_entropy": h_c,
    }
