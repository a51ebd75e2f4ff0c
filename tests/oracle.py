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


def weighted_output_sum(out: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The seven outputs weighed by OUTPUT_WEIGHTS and summed: one scalar whose gradient
    carries every output's."""
    return sum(w * out[key] for key, w in OUTPUT_WEIGHTS.items())

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
    mean_denominator: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """The seven outputs, from ``Categorical`` / ``Normal`` entropies, in float64.

    ``row_weights`` [B]: the batch means become weighted means, sum_i w_i h_i / sum_i w_i.
    ``mean_denominator`` (0-dim): they become sum_i c_i h_i / mean_denominator (c_i the
    weights, or 1), a shared ``[D]`` log_std's entropy counting once per row (B rows: those
    of the logits, else of a ``[B, D]`` log_std; 1 for a ``[D]`` alone).
    """
    rows = logits.shape[0] if logits is not None else (log_std.shape[0] if log_std.dim() == 2 else 1)
    weights = torch.ones(rows, dtype=torch.float64) if row_weights is None else row_weights.double()

    def batch_mean(per_row):
        if mean_denominator is not None:
            return (weights * per_row).sum() / mean_denominator.double()
        return per_row.mean() if row_weights is None else (weights * per_row).sum() / weights.sum()

    zero = torch.zeros((), dtype=torch.float64)
    h_d = batch_mean(categorical_entropies(logits)) if logits is not None else zero
    if log_std is not None:
        per_sample = normal_entropies(log_std)
        if log_std.dim() == 2:
            h_c = batch_mean(per_sample)
        else:
            h_c = per_sample if mean_denominator is None else batch_mean(per_sample.expand(rows))
    else:
        h_c = zero
    return combine(
        h_d, h_c, entropy_coeff, discrete_entropy_weight, continuous_entropy_weight, min_entropy_threshold,
        continuous_min_entropy_threshold, penalty_multiplier, logits is not None, log_std is not None,
    )


def categorical_entropies(logits: torch.Tensor) -> torch.Tensor:
    """``Categorical`` entropies of the rows of ``[..., K]`` logits, float64 ``[...]``; a
    fully masked row's is 0."""
    leading = logits.shape[:-1]
    logits = logits.double().reshape(-1, logits.shape[-1])
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
    return Categorical(logits=logits).entropy().reshape(leading)


def normal_entropies(log_std: torch.Tensor) -> torch.Tensor:
    """``Normal`` entropies of the rows of a ``[..., D]`` log_std (0-dim for ``[D]``), float64."""
    ls = log_std.double()
    return Normal(torch.zeros_like(ls), ls.exp()).entropy().sum(-1)


def aggregate(per_row: torch.Tensor, weights: torch.Tensor, mode: str, loss_scale_factor=None) -> torch.Tensor:
    """verl's ``agg_loss`` (one process) of per-row values ``[...]`` with weights of their
    shape, written out from its definitions; sequences one at a time."""
    if mode == "token-mean":
        return (weights * per_row).sum() / weights.sum()
    if mode == "token-sum":
        return (weights * per_row).sum()
    num_sequences, tokens = per_row.shape
    sequence_values = []
    for b in range(num_sequences):
        token_weight = weights[b].sum()
        if token_weight > 0:
            token_sum = (weights[b] * per_row[b]).sum()
            sequence_values.append(token_sum / token_weight if mode == "seq-mean-token-mean" else token_sum)
    mean = sum(sequence_values) / len(sequence_values) if sequence_values else per_row.sum() * math.nan
    if mode == "seq-mean-token-sum-norm":
        return mean / (tokens if loss_scale_factor is None else loss_scale_factor)
    assert mode in ("seq-mean-token-sum", "seq-mean-token-mean"), mode
    return mean


def aggregated_oracle(
    logits: Optional[torch.Tensor],
    log_std: Optional[torch.Tensor],
    entropy_coeff,
    discrete_entropy_weight: float = 1.0,
    continuous_entropy_weight: float = 0.5,
    min_entropy_threshold: Optional[float] = 0.1,
    continuous_min_entropy_threshold: Optional[float] = 0.1,
    penalty_multiplier: float = 3.0,
    sample_mask: Optional[torch.Tensor] = None,
    loss_agg_mode: str = "token-mean",
    loss_scale_factor=None,
) -> Dict[str, torch.Tensor]:
    """The seven outputs with ``H_d``, ``H_c`` aggregated over the rows of ``[..., K]``
    logits and a ``[..., D]`` (or shared ``[D]``) log_std by :func:`aggregate`, in float64.
    A shared log_std's entropy is every row's."""
    if logits is not None:
        leading = logits.shape[:-1]
    elif log_std.dim() >= 2:
        leading = log_std.shape[:-1]
    else:
        leading = sample_mask.shape if sample_mask is not None else torch.Size([])
    weights = torch.ones(leading, dtype=torch.float64) if sample_mask is None else sample_mask.double()
    zero = torch.zeros((), dtype=torch.float64)
    h_d = aggregate(categorical_entropies(logits), weights, loss_agg_mode, loss_scale_factor) if logits is not None else zero
    if log_std is not None:
        h_c = aggregate(normal_entropies(log_std).expand(leading), weights, loss_agg_mode, loss_scale_factor)
    else:
        h_c = zero
    return combine(
        h_d, h_c, entropy_coeff, discrete_entropy_weight, continuous_entropy_weight, min_entropy_threshold,
        continuous_min_entropy_threshold, penalty_multiplier, logits is not None, log_std is not None,
    )


def combine(
    h_d, h_c, entropy_coeff, discrete_entropy_weight, continuous_entropy_weight, min_entropy_threshold,
    continuous_min_entropy_threshold, penalty_multiplier, has_discrete, has_continuous,
) -> Dict[str, torch.Tensor]:
    """The seven outputs from the two entropies (docs/design.md, "Semantics")."""
    zero = torch.zeros((), dtype=torch.float64)
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
    discrete_penalty = penalty(min_entropy_threshold, h_d, has_discrete)
    continuous_penalty = penalty(continuous_min_entropy_threshold, h_c, has_continuous)
    return {
        "total": discrete + continuous + discrete_penalty + continuous_penalty,
        "discrete": discrete,
        "continuous": continuous,
        "discrete_penalty": discrete_penalty,
        "continuous_penalty": continuous_penalty,
        "discrete_entropy": h_d,
        "continuous_entropy": h_c,
    }


# --------------------------------------------------------------------------------------
# Per-token terms: log-probability of the taken action and entropy, per row
# --------------------------------------------------------------------------------------


def token_terms_oracle(
    logits: torch.Tensor,
    actions: Optional[torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
):
    """``(log_prob, entropy)`` of ``Categorical(logits=logits.double() / temperature)`` per
    row, each of the leading shape ``[...]``, float64; ``log_prob`` is None without actions.
    Differentiable (autograd) w.r.t. ``logits``.

    - Rows where ``mask`` is False give 0 with gradient 0: they are replaced by zeros before
      any arithmetic (a NaN there reaches neither the values nor, through ``where``, the
      gradient), and so are their actions.
    - Each row is first shifted by its largest finite logit, a constant (the distribution
      is shift-invariant): rows of huge logits (``-1e30``, ``finfo.min``) keep their precision.
    - A ``-inf`` logit is an impossible action: probability 0 and gradient exactly 0. It is
      replaced by a constant 1000 below the row's smallest finite logit (``exp(-1000)`` is
      exactly 0 in float64), so ``Categorical`` sees only the possible actions. If it is the
      taken action, its log-probability is ``-inf`` and its gradient is that of
      ``-logsumexp`` over the others (``-p_k / T``): the taken logit is a constant.
    - A row whose every logit is ``-inf``: entropy 0 with gradient 0, and the log-probability
      of any action there is ``-inf`` with gradient 0 (the stand-in row is a constant).

    The gradient w.r.t. ``x_k`` of ``g_a log_prob + g_h entropy`` is then the closed form
    ``(1/T) (-p_k (g_a + g_h (log p_k + h)) + g_a [k = a, x_a finite])``.
    """
    lead, k = logits.shape[:-1], logits.shape[-1]
    z = logits.double().reshape(-1, k) / temperature
    n = z.shape[0]
    keep = torch.ones(n, dtype=torch.bool) if mask is None else mask.reshape(-1).cpu()
    z = torch.where(keep[:, None], z, torch.zeros_like(z))

    impossible = torch.isneginf(z.detach())
    all_impossible = impossible.all(dim=-1)
    # Shifted by the row's largest finite logit (a constant: the distribution, hence every
    # value and gradient, is that of z): Categorical's own normalization, z - logsumexp(z),
    # would cancel catastrophically for rows like [-1e30] * K even in float64.
    largest_finite = torch.where(impossible, -math.inf, z.detach()).amax(dim=-1, keepdim=True)
    z = z - torch.where(all_impossible[:, None], torch.zeros_like(largest_finite), largest_finite)
    impossible = torch.isneginf(z.detach())
    smallest_finite = torch.where(impossible, math.inf, z.detach()).amin(dim=-1, keepdim=True)
    stand_in = torch.where(all_impossible[:, None], torch.zeros_like(smallest_finite), smallest_finite - 1000.0)
    z = torch.where(impossible, stand_in.expand_as(z), z)

    dist = Categorical(logits=z)
    zero = torch.zeros((), dtype=torch.float64)
    entropy = torch.where(all_impossible, zero, dist.entropy())
    entropy = torch.where(keep, entropy, zero).reshape(lead)

    log_prob = None
    if actions is not None:
        taken = torch.where(keep, actions.reshape(-1).cpu().long(), 0)
        taken_impossible = impossible.gather(-1, taken[:, None]).squeeze(-1)
        # A constant -inf where the taken action is impossible: the value is -inf, the
        # gradient that of the (finite) log-probability of the stand-in, -p_k / T.
        log_prob = dist.log_prob(taken) + torch.where(taken_impossible, -math.inf, 0.0)
        log_prob = torch.where(keep, log_prob, zero).reshape(lead)
    return log_prob, entropy


# --------------------------------------------------------------------------------------
# Discrete sub-heads (discrete_sizes): SB3's MultiCategorical, one penalty per sub-head
# --------------------------------------------------------------------------------------


def sub_heads_oracle(
    logits: torch.Tensor,
    log_std: Optional[torch.Tensor],
    entropy_coeff,
    discrete_sizes,
    head_thresholds,
    discrete_entropy_weight: float = 1.0,
    continuous_entropy_weight: float = 0.5,
    continuous_min_entropy_threshold: Optional[float] = 0.1,
    penalty_multiplier: float = 3.0,
    row_weights: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """The seven outputs and ``discrete_entropy_per_head`` of a multi-discrete head, in
    float64: each sub-head ``h`` a ``Categorical`` over its columns (as SB3's
    ``MultiCategorical`` splits the logits), ``H_h`` its (weighted) batch mean,
    ``H_d = sum_h H_h``, and the discrete penalty ``m * sum_h max(0, tau_h - H_h)``
    (``head_thresholds``: one threshold or ``None`` per sub-head)."""
    rows = logits.shape[0]
    weights = torch.ones(rows, dtype=torch.float64) if row_weights is None else row_weights.double()

    def batch_mean(per_row):
        return (weights * per_row).sum() / weights.sum()

    head_entropies = [batch_mean(categorical_entropies(z)) for z in torch.split(logits, list(discrete_sizes), dim=-1)]
    h_d = sum(head_entropies[1:], head_entropies[0])
    h_c = batch_mean(normal_entropies(log_std)) if log_std is not None else torch.zeros((), dtype=torch.float64)
    out = combine(
        h_d, h_c, entropy_coeff, discrete_entropy_weight, continuous_entropy_weight, None,
        continuous_min_entropy_threshold, penalty_multiplier, True, log_std is not None,
    )
    penalty = torch.zeros((), dtype=torch.float64)
    for h, tau in zip(head_entropies, head_thresholds):
        if tau is not None:
            gap = tau - h
            penalty = penalty + penalty_multiplier * torch.where(gap > 0, gap, torch.zeros_like(gap))
    out["total"] = out["discrete"] + out["continuous"] + penalty + out["continuous_penalty"]
    out["discrete_penalty"] = penalty
    out["discrete_entropy_per_head"] = torch.stack(head_entropies)
    return out
