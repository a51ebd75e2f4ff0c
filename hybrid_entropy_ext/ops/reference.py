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
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .aggregation import aggregation_of_rows, check_log_std_rows, rows_leading_shape
from .loss_terms import check_sub_heads, loss_terms_from_entropies, loss_terms_from_head_entropies

__all__ = [
    "hybrid_entropy_loss",
    "loss_from_entropies",
    "discrete_row_entropy",
    "continuous_row_entropy",
    "continuous_entropy",
    "weighted_mean",
    "log_prob_and_entropy",
    "action_probabilities",
    "expected_action_entropy",
]

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


def continuous_row_entropy(log_std: Tensor) -> Tensor:
    """Entropy in nats of a diagonal Gaussian per row: ``[..., D] -> [...]`` (``[D] -> []``)."""
    return (log_std.to(_accumulation_dtype(log_std)) + GAUSSIAN_ENTROPY_CONSTANT).sum(dim=-1)


def continuous_entropy(log_std: Tensor) -> Tensor:
    """Batch-mean entropy in nats of a diagonal Gaussian, ``[B, D]`` or ``[D]`` -> ``[]``."""
    per_sample = continuous_row_entropy(log_std)
    return per_sample.mean() if log_std.dim() == 2 else per_sample


def log_prob_and_entropy(
    logits: Tensor,
    actions: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    temperature: float = 1.0,
    action_mask: Optional[Tensor] = None,
    discrete_sizes: Optional[List[int]] = None,
) -> Tuple[Optional[Tensor], Tensor]:
    """Pure-PyTorch version of :func:`hybrid_entropy_ext.log_prob_and_entropy`.

    ``logits`` ``[..., K]``; ``actions`` (int64 or int32) and ``mask`` (bool) of the
    leading shape ``[...]``; ``action_mask`` (bool) of the logits' shape. Returns
    ``(log_prob, entropy)`` of ``softmax(logits / temperature)``, each ``[...]``
    (``log_prob`` is ``None`` without actions), float64 for float64 logits, else float32.
    Rows where ``mask`` is False give 0 and gradient 0 whatever they hold; a ``-inf``
    logit, or an action ``action_mask`` rules out (False) whatever its logit holds, gets
    probability 0 and gradient 0. With ``discrete_sizes`` ``[K_1, ..., K_H]`` the columns
    are ``H`` sub-heads, ``actions`` are ``[..., H]``, and each row's terms are the sums
    of its sub-heads'.

    Example::

        >>> from hybrid_entropy_ext import reference
        >>> log_prob, entropy = reference.log_prob_and_entropy(torch.randn(4, 7, 10), torch.zeros(4, 7, dtype=torch.long))
        >>> log_prob.shape, entropy.shape
        (torch.Size([4, 7]), torch.Size([4, 7]))
    """
    if not temperature > 0.0 or not math.isfinite(temperature):
        raise ValueError(f"log_prob_and_entropy: temperature must be a finite number > 0, got {temperature}")
    # The op's range (csrc/token_terms_plan.cpp): 1 / T within [1 / sqrt(max), sqrt(max)].
    largest_scale = math.sqrt(torch.finfo(_accumulation_dtype(logits)).max)
    if not 1.0 / largest_scale <= 1.0 / temperature <= largest_scale:
        raise ValueError(
            f"log_prob_and_entropy: temperature {temperature:g} is too "
            f"{'small' if 1.0 / temperature > largest_scale else 'large'}: 1 / temperature must be within "
            f"[{1.0 / largest_scale:g}, {largest_scale:g}] in the logits' accumulation dtype"
        )
    if discrete_sizes is None:
        return _one_head_log_prob_and_entropy(logits, actions, mask, temperature, action_mask)
    check_sub_heads(discrete_sizes, None, logits.shape[-1], op="log_prob_and_entropy")
    sizes = [int(k) for k in discrete_sizes]
    if actions is not None and actions.shape != logits.shape[:-1] + (len(sizes),):
        raise ValueError(
            f"log_prob_and_entropy: with discrete_sizes, actions must be [..., H] = "
            f"{list(logits.shape[:-1]) + [len(sizes)]}, got {list(actions.shape)}"
        )
    head_action_masks = [None] * len(sizes) if action_mask is None else action_mask.split(sizes, dim=-1)
    heads = [
        _one_head_log_prob_and_entropy(
            head_logits, None if actions is None else actions[..., h], mask, temperature, head_action_mask
        )
        for h, (head_logits, head_action_mask) in enumerate(zip(logits.split(sizes, dim=-1), head_action_masks))
    ]
    entropy = torch.stack([head_entropy for _, head_entropy in heads]).sum(dim=0)
    if actions is None:
        return None, entropy
    return torch.stack([head_log_prob for head_log_prob, _ in heads]).sum(dim=0), entropy


def _one_head_log_prob_and_entropy(
    logits: Tensor,
    actions: Optional[Tensor],
    mask: Optional[Tensor],
    temperature: float,
    action_mask: Optional[Tensor],
) -> Tuple[Optional[Tensor], Tensor]:
    """:func:`log_prob_and_entropy` of one categorical head."""
    z = logits.to(_accumulation_dtype(logits)) / temperature
    if action_mask is not None:
        # A copy, as a masked_fill would be: the fused op reads the mask beside the logits.
        z = torch.where(action_mask, z, -math.inf)
    if mask is not None:
        # Padding rows are replaced before any arithmetic: a NaN there reaches neither the
        # outputs nor, through where's backward, the gradient.
        z = torch.where(mask.unsqueeze(-1), z, 0.0)
    entropy = discrete_row_entropy(z)
    log_prob: Optional[Tensor] = None
    if actions is not None:
        index = actions.long()
        if mask is not None:
            index = torch.where(mask, index, 0)
        num_actions = z.shape[-1]
        if bool(((index < 0) | (index >= num_actions)).any()):
            raise IndexError(f"log_prob_and_entropy: an action lies outside [0, {num_actions})")
        all_masked = torch.isneginf(z).all(dim=-1, keepdim=True)
        z = torch.where(all_masked, 0.0, z)
        # Shifted by the row's max (a constant: its gradient cancels), so that huge logits
        # keep their differences.
        z = z - z.amax(dim=-1, keepdim=True).detach()
        z_taken = z.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        # A -inf logit is a constant (an impossible action): no gradient through it.
        z_taken = torch.where(torch.isneginf(z_taken), z_taken.detach(), z_taken)
        log_prob = z_taken - torch.logsumexp(z, dim=-1)
        log_prob = torch.where(all_masked.squeeze(-1), -math.inf, log_prob)
        if mask is not None:
            log_prob = torch.where(mask, log_prob, 0.0)
    if mask is not None:
        entropy = torch.where(mask, entropy, 0.0)
    return log_prob, entropy


def action_probabilities(logits: Tensor) -> Tensor:
    """``softmax(logits)`` per row, ``[..., K]``, in the accumulation dtype: ``-inf`` logits get
    probability 0, and a row whose every logit is ``-inf`` gets 0 everywhere (no choice, as
    :func:`discrete_row_entropy` reads it), with no NaN in the values or the gradient."""
    z = logits.to(_accumulation_dtype(logits))
    all_masked = torch.isneginf(z).all(dim=-1, keepdim=True)
    p = torch.softmax(torch.where(all_masked, 0.0, z), dim=-1)
    return torch.where(all_masked, 0.0, p)


def expected_action_entropy(logits: Tensor, log_std: Tensor) -> Tensor:
    """A parameterized policy's continuous entropy per row, ``[..., K]`` and ``[..., K, P]``
    (or ``[K, P]``) ``-> [...]``: ``sum_k p_k c_k``, ``c_k`` the entropy of action ``k``'s
    diagonal Gaussian (:func:`continuous_row_entropy` of its ``P`` log-stds)."""
    return (action_probabilities(logits) * continuous_row_entropy(log_std)).sum(dim=-1)


def _row_entropy(logits: Tensor, allowed: Optional[Tensor], normalize: bool) -> Tensor:
    """Each row's entropy ``[N]``; normalized: times ``1 / log n`` (0 where ``n <= 1``), ``n``
    the actions ``allowed`` allows in the row (all of them without a mask)."""
    per_row = discrete_row_entropy(logits).reshape(-1)
    if not normalize:
        return per_row
    num_actions = logits.shape[-1]
    if allowed is None:
        count = torch.full_like(per_row, float(num_actions))
    else:
        count = allowed.reshape(-1, num_actions).sum(dim=-1).to(per_row.dtype)
    safe = torch.where(count > 1, count, torch.full_like(count, 2.0))
    return torch.where(count > 1, per_row / torch.log(safe), torch.zeros_like(per_row))


def weighted_mean(per_row: Tensor, row_weights: Optional[Tensor], mean_denominator: Optional[Tensor]) -> Tensor:
    """``sum_i c_i h[i] / D`` over ``per_row`` ``[N]``, as the fused op's ``row_weights`` (``c``;
    ``None``: 1) and ``mean_denominator`` (``D``; ``None``: ``sum_i c_i``) define it."""
    weighted = per_row if row_weights is None else row_weights * per_row
    if mean_denominator is not None:
        return (weighted.sum() / mean_denominator).to(per_row.dtype)
    if row_weights is None:
        return per_row.mean()
    return (weighted.sum() / row_weights.sum()).to(per_row.dtype)


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
    sample_mask: Optional[Tensor] = None,
    loss_agg_mode: str = "token-mean",
    loss_scale_factor: Optional[float] = None,
    action_mask: Optional[Tensor] = None,
    discrete_sizes: Optional[List[int]] = None,
    parameterized_actions: bool = False,
    normalize_discrete_entropy: bool = False,
    discrete_head_thresholds: Optional[List[float]] = None,
) -> Dict[str, Tensor]:
    """Pure-PyTorch version of :func:`hybrid_entropy_ext.hybrid_entropy_loss`.

    Args and returns are the same: ``logits`` ``[..., K]`` or ``None``,
    ``log_std`` ``[..., D]``, ``[D]`` or ``None``, the mask and aggregation of the rows,
    the action mask (bool, the logits' shape; its ``False`` actions become ``-inf``
    logits, in a masked copy of the logits), the sub-heads (``discrete_sizes``, each
    split off the logits with ``torch.split``) and their thresholds, the normalization (each
    row's entropy times ``1 / log n``, ``n`` its allowed actions), parameterized actions
    (``log_std`` ``[..., K, P]`` or ``[K, P]``; each row's continuous entropy
    :func:`expected_action_entropy`), and a dict of seven
    0-dim tensors (float64 if either head is float64, else float32), plus
    ``discrete_entropy_per_head`` ``[H]`` with ``discrete_sizes``.

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
    leading_shape = rows_leading_shape(logits, log_std, sample_mask)
    if logits is not None and not parameterized_actions:
        check_log_std_rows(log_std, leading_shape)
    row_weights, mean_denominator = aggregation_of_rows(
        sample_mask, loss_agg_mode, loss_scale_factor, leading_shape, heads[0].device
    )
    h_d = zero
    allowed = action_mask
    if action_mask is not None:
        if logits is None:
            raise ValueError("hybrid_entropy_loss: action_mask rules out discrete actions, but there are no logits")
        if action_mask.shape != logits.shape:
            raise ValueError(
                f"hybrid_entropy_loss: action_mask must have the logits' shape {list(logits.shape)}, "
                f"got {list(action_mask.shape)}"
            )
        logits = torch.where(action_mask, logits, -math.inf)
    check_sub_heads(discrete_sizes, discrete_head_thresholds, None if logits is None else logits.shape[-1])
    head_entropies: List[Tensor] = []
    if discrete_sizes is not None and logits is not None:
        sizes = [int(k) for k in discrete_sizes]
        masks = [None] * len(sizes) if allowed is None else list(torch.split(allowed, sizes, dim=-1))
        for sub_head, sub_mask in zip(torch.split(logits, sizes, dim=-1), masks):
            per_row = _row_entropy(sub_head, sub_mask, normalize_discrete_entropy)
            head_entropies.append(weighted_mean(per_row, row_weights, mean_denominator).to(out_dtype))
    elif logits is not None:
        per_row = _row_entropy(logits, allowed, normalize_discrete_entropy)
        h_d = weighted_mean(per_row, row_weights, mean_denominator).to(out_dtype)
    h_c = zero
    if parameterized_actions:
        if logits is None or log_std is None:
            raise ValueError("hybrid_entropy_loss: parameterized_actions needs both logits and log_std")
        if discrete_sizes is not None:
            raise ValueError("hybrid_entropy_loss: discrete_sizes cannot be combined with parameterized_actions")
        if log_std.dim() != 2 and log_std.shape[:-1] != logits.shape:
            raise ValueError(
                "hybrid_entropy_loss: with parameterized_actions, log_std must be [..., K, P] with the logits' "
                f"shape {list(logits.shape)} before P, or [K, P]; got shape {list(log_std.shape)}"
            )
        per_row = expected_action_entropy(logits, log_std).expand(leading_shape).reshape(-1)
        h_c = weighted_mean(per_row, row_weights, mean_denominator).to(out_dtype)
    elif log_std is not None and log_std.dim() == 1 and mean_denominator is None:
        h_c = continuous_row_entropy(log_std).to(out_dtype)  # every row's, whatever the weights
    elif log_std is not None:
        per_row = continuous_row_entropy(log_std).expand(leading_shape).reshape(-1)
        h_c = weighted_mean(per_row, row_weights, mean_denominator).to(out_dtype)
    if head_entropies:
        return loss_terms_from_head_entropies(
            head_entropies,
            h_c,
            entropy_coeff,
            discrete_entropy_weight,
            continuous_entropy_weight,
            min_entropy_threshold,
            continuous_min_entropy_threshold,
            penalty_multiplier,
            has_continuous=log_std is not None,
            head_thresholds=discrete_head_thresholds,
        )
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
