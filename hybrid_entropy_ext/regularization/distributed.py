"""The regularizer's loss over the global batch of a ``torch.distributed`` process group.

Each rank computes its batch means with the fused op, the ranks' sums and row counts are
added by a differentiable all-reduce (:func:`all_reduce_sum`, the custom op
``hybrid_entropy_ext::_all_reduce_sum``), and the loss terms are computed from the global
means (:func:`~hybrid_entropy_ext.ops.loss_terms.loss_terms_from_entropies`), so every rank
returns the values of one process on the concatenated batch. Eager and ``torch.compile``
only (not TorchScript).
"""

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ..ops.loss import hybrid_entropy_loss
from ..ops.loss_terms import loss_terms_from_entropies

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
) -> Dict[str, Tensor]:
    """The seven loss terms of the global batch: the batch means over every rank of
    ``process_group`` (None: the default group), the arguments as for
    :func:`~hybrid_entropy_ext.hybrid_entropy_loss` (``coeff`` a 0-dim or ``[2]`` tensor).

    Every rank returns the same values and applies the same penalty. The all-reduce's
    backward sums the ranks' gradients, so each rank's gradient is the world size times
    its share of the global-batch gradient: averaged over ranks, as
    DistributedDataParallel averages, it is the single-process gradient. A shared ``[D]``
    log_std has one entropy for every sample; it counts as the rank's batch size (the rows
    of ``logits``, or 1 without them), so its global mean is the sample-weighted mean over
    ranks, the same on every rank while DDP keeps the parameter in sync. Every rank must
    call it with the same heads present and at least one row.

    Raises:
        RuntimeError: ``torch.distributed`` is not initialized.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "HybridEntropyRegularizer(distributed=True): torch.distributed is not initialized; "
            "call torch.distributed.init_process_group first"
        )
    # The local per-row work, fused, with the penalties off: only the batch means are used.
    local = hybrid_entropy_loss(logits, log_std, 0.0, 1.0, 1.0, None, None, 0.0)
    h_d, h_c = local["discrete_entropy"], local["continuous_entropy"]
    rows_d = logits.shape[0] if logits is not None else 0
    if log_std is None:
        rows_c = 0
    elif log_std.dim() == 2:
        rows_c = log_std.shape[0]
    else:
        rows_c = rows_d if rows_d > 0 else 1  # [D]: the same entropy for every sample
    # Sums and counts in float64 (counts exact), one all-reduce for all four. Counts are
    # fills, not tensors built on the host, so nothing is copied to the device.
    stats = torch.stack(
        [
            h_d.double() * rows_d,
            h_c.double() * rows_c,
            torch.full_like(h_d, rows_d, dtype=torch.float64),
            torch.full_like(h_c, rows_c, dtype=torch.float64),
        ]
    )
    reduced = all_reduce_sum(stats, process_group_name(process_group))
    dtype = local["total"].dtype
    global_d = (reduced[0] / reduced[2]).to(dtype) if logits is not None else torch.zeros_like(h_d)
    global_c = (reduced[1] / reduced[3]).to(dtype) if log_std is not None else torch.zeros_like(h_c)
    return loss_terms_from_entropies(
        global_d,
        global_c,
        coeff,
        discrete_entropy_weight,
        continuous_entropy_weight,
        min_entropy_threshold,
        continuous_min_entropy_threshold,
        penalty_multiplier,
        has_discrete=logits is not None,
        has_continuous=log_std is not None,
    )
