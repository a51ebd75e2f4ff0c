"""The regularizer's loss over the global batch of a ``torch.distributed`` process group.

Each rank computes its rows' weighted entropy sums with the fused op, the ranks' sums and
denominators (row counts, mask sums or sequence counts, by the aggregation mode) are
added by a differentiable all-reduce (:func:`all_reduce_sum`, the custom op
``hybrid_entropy_ext::_all_reduce_sum``), and the loss terms are computed from the global
means (:func:`~hybrid_entropy_ext.ops.loss_terms.loss_terms_from_entropies`), so every rank
returns the values of one process on the concatenated batch. Eager and ``torch.compile``
only (not TorchScript).
"""

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from ..ops.aggregation import additive_aggregation_of_rows, rows_leading_shape
from ..ops.loss import hybrid_entropy_loss
from ..ops.loss_terms import check_sub_heads, loss_terms_from_entropies, loss_terms_from_head_entropies

__all__ = ["all_reduce_sum", "process_group_name", "global_loss"]


@torch.library.custom_op("hybrid_entropy_ext::_all_reduce_sum", mutates_args=())
def all_reduce_sum(tensor: Tensor, group_name: str) -> Tensor:
    """The sum of every rank's ``tensor`` over the process group named ``group_name`` (out
    of place). An op of its own, with its autograd registered below, so that eager code
    and ``torch.compile`` (which keeps a custom op opaque) differentiate it alike on every
    supported torch; torch 2.11's compile gives a ``torch.autograd.Function`` around
    ``dist.all_reduce`` a zero gradient (tests/test_distributed.py)."""
    import torch.distributed as dist
    from torch.distributed.distributed_c10d import _resolve_process_group

    result = tensor.clone()
    dist.all_reduce(result, op=dist.ReduceOp.SUM, group=_resolve_process_group(group_name))
    return result


@all_reduce_sum.register_fake
def _(tensor: Tensor, group_name: str) -> Tensor:
    return torch.empty_like(tensor)


def _setup_context(ctx: Any, inputs: Any, output: Tensor) -> None:
    ctx.group_name = inputs[1]


def _backward(ctx: Any, grad: Tensor):
    # Each rank's input enters every rank's loss through the sum: its gradient is the sum
    # of every rank's gradient of the result.
    return all_reduce_sum(grad, ctx.group_name), None


all_reduce_sum.register_autograd(_backward, setup_context=_setup_context)


def process_group_name(group: Any) -> str:
    """The name of ``group`` (None: the default group), as collectives' ops take it."""
    if group is None:
        from torch.distributed.distributed_c10d import _get_default_group

        group = _get_default_group()
    return group.group_name


def global_loss(
    logits: Optional[Tensor],
    log_std: Optional[Tensor],
    coeff: Tensor,
    discrete_entropy_weight: float,
    continuous_entropy_weight: float,
    min_entropy_threshold: Optional[float],
    continuous_min_entropy_threshold: Optional[float],
    penalty_multiplier: float,
    process_group: Any = None,
    sample_mask: Optional[Tensor] = None,
    loss_agg_mode: str = "token-mean",
    loss_scale_factor: Optional[float] = None,
    action_mask: Optional[Tensor] = None,
    discrete_sizes: Optional[List[int]] = None,
    parameterized_actions: bool = False,
    normalize_discrete_entropy: bool = False,
    discrete_head_thresholds: Optional[List[float]] = None,
) -> Dict[str, Tensor]:
    """The seven loss terms of the global batch: ``H_d`` and ``H_c`` aggregated over every
    rank of ``process_group`` (None: the default group), the arguments as for
    :func:`~hybrid_entropy_ext.hybrid_entropy_loss` (``coeff`` a 0-dim or ``[2]`` tensor).

    Every mode is what one process computes on the concatenated batch (sequences whole on
    one rank): each rank adds its rows' weighted entropies ``sum_i c_i h[i]`` (the fused
    op, as a ``token-sum`` with the weights ``c``; for ``seq-mean-token-mean`` these are
    the rank's per-sequence ``w / sum_t w``, ``1 / T`` without a mask; for ``-norm``,
    ``w / loss_scale_factor``) and its denominator (``sum w`` for ``token-mean``, the
    sequences with some weight for the sequence modes; none for ``token-sum``), one
    all-reduce adds them over the ranks, and the global ``H`` is their quotient
    (:func:`~hybrid_entropy_ext.ops.aggregation.additive_aggregation_of_rows`). Ranks may
    differ in ``T`` and in passing a mask or not; the default factor of ``-norm`` is then
    each rank's own ``T``, as verl's is each micro-batch's.

    With ``normalize_discrete_entropy`` the rows' normalized entropies are summed (the
    normalization is per row); with ``parameterized_actions``, each row's expected action
    entropy, as the continuous head's. With ``discrete_sizes``, each sub-head's weighted sum is
    reduced on its own (one fused
    call per sub-head, on its columns) and each gets its global penalty, as
    :func:`~hybrid_entropy_ext.ops.loss_terms.loss_terms_from_head_entropies` says.

    Every rank returns the same values and applies the same penalty. The all-reduce's
    backward sums the ranks' gradients, so each rank's gradient is the world size times
    its share of the global-batch gradient: averaged over ranks, as
    DistributedDataParallel averages, it is the single-process gradient. A shared ``[D]``
    log_std has one entropy for every sample; it counts once per row of the rank (the
    rows of ``logits``, or of the mask, or 1 without either), so its global mean is the
    sample-weighted mean over ranks, the same on every rank while DDP keeps the parameter
    in sync. Every rank must call it with the same heads present, the same mode and at
    least one row.

    Raises:
        RuntimeError: ``torch.distributed`` is not initialized.
        ValueError: as :func:`~hybrid_entropy_ext.hybrid_entropy_loss` for the mask and mode.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "HybridEntropyRegularizer(distributed=True): torch.distributed is not initialized; "
            "call torch.distributed.init_process_group first"
        )
    leading_shape = rows_leading_shape(logits, log_std, sample_mask)
    # Without either head the op below raises, naming both.
    device = logits.device if logits is not None else (log_std.device if log_std is not None else coeff.device)
    weights, denominator = additive_aggregation_of_rows(
        sample_mask, loss_agg_mode, loss_scale_factor, leading_shape, device
    )
    # The local weighted sums, fused, with the penalties off: only the entropies are used.
    row_weights = None if weights is None else weights.reshape(leading_shape)

    def local_sums(head_logits: Optional[Tensor], head_log_std: Optional[Tensor], head_mask: Optional[Tensor]):
        return hybrid_entropy_loss(
            head_logits, head_log_std, 0.0, 1.0, 1.0, None, None, 0.0, row_weights, "token-sum", action_mask=head_mask,
            normalize_discrete_entropy=normalize_discrete_entropy,
            parameterized_actions=parameterized_actions,
        )

    check_sub_heads(discrete_sizes, discrete_head_thresholds, None if logits is None else logits.shape[-1])
    head_sums: List[Tensor] = []
    if discrete_sizes is None or logits is None:
        local = local_sums(logits, log_std, action_mask)
        sums = [local["discrete_entropy"].double(), local["continuous_entropy"].double()]
    else:
        # One call per sub-head, on its columns. The first also sums log_std's entropies:
        # beside the logits' rows, a shared [D] log_std counts once per row, as the
        # denominator counts them (alone and unweighted it would count once).
        sums = [torch.zeros((), dtype=torch.float64, device=device)] * 2
        first = 0
        for h, size in enumerate(discrete_sizes):
            columns = slice(first, first + size)
            head_mask = None if action_mask is None else action_mask[..., columns]
            local = local_sums(logits[..., columns], log_std if h == 0 else None, head_mask)
            head_sums.append(local["discrete_entropy"].double())
            if h == 0 and log_std is not None:
                sums[1] = local["continuous_entropy"].double()
            first += size
    dtype = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in (logits, log_std)) else torch.float32
    # One all-reduce for the sums and the denominator (float64: counts exact).
    reduced = all_reduce_sum(
        torch.stack(sums + head_sums if denominator is None else sums + head_sums + [denominator]),
        process_group_name(process_group),
    )
    count = len(sums) + len(head_sums)
    means = reduced[:count] if denominator is None else reduced[:count] / reduced[count]
    zero = torch.zeros((), dtype=dtype, device=device)
    if head_sums:
        return loss_terms_from_head_entropies(
            [means[2 + h].to(dtype) for h in range(len(head_sums))],
            means[1].to(dtype) if log_std is not None else zero,
            coeff,
            discrete_entropy_weight,
            continuous_entropy_weight,
            min_entropy_threshold,
            continuous_min_entropy_threshold,
            penalty_multiplier,
            has_continuous=log_std is not None,
            head_thresholds=discrete_head_thresholds,
        )
    return loss_terms_from_entropies(
        means[0].to(dtype) if logits is not None else zero,
        means[1].to(dtype) if log_std is not None else zero,
        coeff,
        discrete_entropy_weight,
        continuous_entropy_weight,
        min_entropy_threshold,
        continuous_min_entropy_threshold,
        penalty_multiplier,
        has_discrete=logits is not None,
        has_continuous=log_std is not None,
    )
