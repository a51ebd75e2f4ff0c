"""How a sample mask and a loss-aggregation mode become the fused op's row weights and denominator.

The op takes each batch mean as ``sum_i c_i h[i] / D`` (docs/design.md, "Row weights"):
``c`` its ``row_weights`` and ``D`` its ``mean_denominator``. The aggregation modes of
verl's ``agg_loss`` (dp size 1) are such means, over the rows of a ``[B, T]`` (or, for the
token modes, any) leading shape with weights ``w`` (the mask as float; 1 without one):

=========================== ======================================= =====================
mode                        value                                   ``(c, D)``
=========================== ======================================= =====================
``token-mean``              ``sum w h / sum w``                     ``(w, None)``
``token-sum``               ``sum w h``                             ``(w, 1)``
``seq-mean-token-sum``      ``mean_s sum_t w h``                    ``(w, S)``
``seq-mean-token-sum-norm`` the above ``/ loss_scale_factor``       ``(w, S * factor)``
``seq-mean-token-mean``     ``mean_s (sum_t w h / sum_t w)``        ``(w / sum_t w, S)``
=========================== ======================================= =====================

``S`` is the number of sequences with some weight (``sum_t w > 0``; ``B`` without a
mask) and ``factor`` defaults to ``T``. Everything is computed where the mask lives, in
float64, with tensor operations only: no value is read back to the host.
"""

import math
from typing import Final, List, Optional, Tuple

import torch
from torch import Tensor

from .._validation import describe, is_real

__all__ = [
    "LOSS_AGG_MODES",
    "rows_leading_shape",
    "check_log_std_rows",
    "check_loss_aggregation",
    "aggregation_row_weights",
    "aggregation_denominator",
    "aggregation_of_rows",
    "additive_aggregation_of_rows",
]


def _modes() -> List[str]:
    # A function, not a global: TorchScript reads no global tuple or list.
    return ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"]


#: The values of ``loss_agg_mode``; those starting with ``seq-`` aggregate sequences.
LOSS_AGG_MODES: Final = tuple(_modes())


def _shape_text(shape: List[int]) -> str:
    return "[" + ", ".join([str(size) for size in shape]) + "]"


def _num_rows(leading_shape: List[int]) -> int:
    rows = 1
    for size in leading_shape:
        rows *= size
    return rows


def rows_leading_shape(logits: Optional[Tensor], log_std: Optional[Tensor], sample_mask: Optional[Tensor]) -> List[int]:
    """The dims before the last that the rows come from: the logits', else a per-sample
    log_std's, else (a ``[D]`` log_std alone) the mask's, else none. Raises a
    ``ValueError`` for logits without a leading dim."""
    if logits is not None:
        if logits.dim() < 2:
            raise ValueError(
                "hybrid_entropy_loss: logits must be [..., K] with at least one leading (batch) dim, "
                "got shape " + str(list(logits.shape))
            )
        return list(logits.shape[:-1])
    if log_std is not None and log_std.dim() >= 2:
        return list(log_std.shape[:-1])
    if sample_mask is not None:
        return list(sample_mask.shape)
    return []


def check_log_std_rows(log_std: Optional[Tensor], leading_shape: List[int]) -> None:
    """Raise a ``ValueError`` unless ``log_std`` (if any) is ``[D]`` (shared by the rows) or
    ``[*leading_shape, D]``, the logits' leading dims (:func:`rows_leading_shape`)."""
    if log_std is not None and log_std.dim() != 1 and list(log_std.shape[:-1]) != leading_shape:
        raise ValueError(
            "hybrid_entropy_loss: log_std must be [B, D] or [D] (shared by the batch), where B "
            "is the leading dims of logits, " + str(leading_shape) + "; got shape " + str(list(log_std.shape))
        )


def _check_python_types(loss_agg_mode: object, loss_scale_factor: object) -> None:
    """What TorchScript's annotations check in scripted code: a str mode, a number factor
    (a ``TypeError`` otherwise, as for every argument of the wrong type)."""
    if not isinstance(loss_agg_mode, str):
        raise TypeError(
            "hybrid_entropy_loss: loss_agg_mode must be one of " + ", ".join(_modes())
            + "; got " + describe(loss_agg_mode)
        )
    if loss_scale_factor is not None and not is_real(loss_scale_factor):
        raise TypeError(
            "hybrid_entropy_loss: loss_scale_factor must be a finite number > 0 (or None), got "
            + describe(loss_scale_factor)
        )


def check_loss_aggregation(
    sample_mask: Optional[Tensor],
    loss_agg_mode: str,
    loss_scale_factor: Optional[float],
    leading_shape: List[int],
) -> None:
    """Raise a ``ValueError`` naming the argument unless the three describe an aggregation
    of rows of ``leading_shape`` (the inputs' dims before the last). Metadata only."""
    if not torch.jit.is_scripting():
        _check_python_types(loss_agg_mode, loss_scale_factor)
    if loss_agg_mode not in _modes():
        raise ValueError(
            "hybrid_entropy_loss: loss_agg_mode must be one of " + ", ".join(_modes())
            + "; got '" + loss_agg_mode + "'"
        )
    if loss_agg_mode.startswith("seq-") and len(leading_shape) != 2:
        raise ValueError(
            "hybrid_entropy_loss: loss_agg_mode '" + loss_agg_mode + "' needs inputs with exactly "
            "two leading dims [B, T] (sequences of tokens); got leading dims " + _shape_text(leading_shape)
        )
    if sample_mask is not None:
        weighs = sample_mask.dtype == torch.bool or sample_mask.is_floating_point()
        if not weighs:
            raise TypeError(
                "hybrid_entropy_loss: sample_mask must be a bool or floating tensor, got dtype "
                + str(sample_mask.dtype)
            )
        if list(sample_mask.shape) != leading_shape:
            raise ValueError(
                "hybrid_entropy_loss: sample_mask must have the inputs' leading shape "
                + _shape_text(leading_shape) + ", got shape " + _shape_text(list(sample_mask.shape))
            )
        if sample_mask.requires_grad:
            # The op's backward differentiates the entropies, not their weights.
            raise ValueError(
                "hybrid_entropy_loss: sample_mask requires grad, but the weights receive no "
                "gradient; pass it detached (sample_mask.detach())"
            )
    if loss_scale_factor is not None:
        positive = math.isfinite(loss_scale_factor) and loss_scale_factor > 0.0
        if not positive:
            raise ValueError(
                "hybrid_entropy_loss: loss_scale_factor must be a finite number > 0 (or None), got "
                + str(loss_scale_factor)
            )


def aggregation_row_weights(
    sample_mask: Optional[Tensor], loss_agg_mode: str, leading_shape: List[int]
) -> Optional[Tensor]:
    """``c``, ``[N]`` float64 (``N`` the rows of ``leading_shape``): the mask as weights, for
    ``seq-mean-token-mean`` each divided by its sequence's sum (0 where that is 0).
    ``None`` where every row weighs 1 (no mask)."""
    if sample_mask is None:
        return None
    weights = sample_mask.to(torch.float64)
    if loss_agg_mode == "seq-mean-token-mean":
        sequence_sums = weights.sum(dim=-1, keepdim=True)  # [B, 1]
        # == 0 rather than <= 0: a NaN sum divides, and its NaN shows in H as in the other modes.
        weights = torch.where(sequence_sums == 0, torch.zeros_like(weights), weights / sequence_sums)
    return weights.reshape(-1)


def _num_sequences(sample_mask: Optional[Tensor], leading_shape: List[int], device: torch.device) -> Tensor:
    """``S``, 0-dim float64: the sequences (rows of a ``[B, T]`` mask) with some weight."""
    if sample_mask is None:
        # The int itself, not float(...): traced, leading_shape[0] may be symbolic, and
        # float() would specialize it (torch.export with a dynamic batch).
        return torch.full((), leading_shape[0], dtype=torch.float64, device=device)
    return (sample_mask.to(torch.float64).sum(dim=-1) != 0).sum().to(torch.float64)


def aggregation_denominator(
    sample_mask: Optional[Tensor],
    loss_agg_mode: str,
    loss_scale_factor: Optional[float],
    leading_shape: List[int],
    device: torch.device,
) -> Optional[Tensor]:
    """What the weighted sum ``sum_i c_i h[i]`` of one process is divided by, 0-dim float64,
    as a sum over processes that split the batch adds up (sequences whole on one process):
    ``sum w`` (``N`` without a mask) for ``token-mean``, ``S``, ``S * factor`` and (``c``
    then being ``w / sum_t w``) ``S`` for the sequence modes; ``None`` for ``token-sum``,
    which divides by nothing."""
    if loss_agg_mode == "token-sum":
        return None
    if loss_agg_mode == "token-mean":
        if sample_mask is None:
            return torch.full((), _num_rows(leading_shape), dtype=torch.float64, device=device)
        return sample_mask.to(torch.float64).sum()
    sequences = _num_sequences(sample_mask, leading_shape, device)
    # T multiplies as an int (the float64 product is the same): traced, it may be symbolic.
    if loss_agg_mode == "seq-mean-token-sum-norm":
        if loss_scale_factor is None:
            return sequences * leading_shape[-1]
        return sequences * loss_scale_factor
    if loss_agg_mode == "seq-mean-token-mean" and sample_mask is None:
        # Every sequence has T tokens of weight 1: c = 1 / T is folded into D.
        return sequences * leading_shape[-1]
    return sequences


def aggregation_of_rows(
    sample_mask: Optional[Tensor],
    loss_agg_mode: str,
    loss_scale_factor: Optional[float],
    leading_shape: List[int],
    device: torch.device,
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``(row_weights, mean_denominator)`` for the fused op: ``[N]`` and 0-dim float64 on
    ``device`` (the mask's), or ``None`` each where the op's default means the same
    (``token-mean`` without a mask passes neither, so the op is exactly the plain mean).

    Example::

        >>> mask = torch.tensor([[True, True, False], [False, False, False]])
        >>> weights, denominator = aggregation_of_rows(mask, "seq-mean-token-mean", None, [2, 3], mask.device)
        >>> weights.tolist(), denominator.item()
        ([0.5, 0.5, 0.0, 0.0, 0.0, 0.0], 1.0)
    """
    check_loss_aggregation(sample_mask, loss_agg_mode, loss_scale_factor, leading_shape)
    if sample_mask is not None and sample_mask.device != device:
        raise ValueError(
            "hybrid_entropy_loss: sample_mask must be on the device of the inputs (" + str(device)
            + "), got " + str(sample_mask.device)
        )
    weights = aggregation_row_weights(sample_mask, loss_agg_mode, leading_shape)
    if loss_agg_mode == "token-mean":
        return weights, None
    if loss_agg_mode == "token-sum":
        return weights, torch.ones((), dtype=torch.float64, device=device)
    return weights, aggregation_denominator(sample_mask, loss_agg_mode, loss_scale_factor, leading_shape, device)


def additive_aggregation_of_rows(
    sample_mask: Optional[Tensor],
    loss_agg_mode: str,
    loss_scale_factor: Optional[float],
    leading_shape: List[int],
    device: torch.device,
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``(row_weights, denominator)`` of one process's share of a batch split over processes
    (sequences whole on one process), such that both add over the processes: the global
    value is ``sum_p (sum_i c_i h[i]) / sum_p D``. ``row_weights`` ``[N]`` float64 (None:
    every row weighs 1), ``denominator`` 0-dim float64 (None for ``token-sum``).

    A process's own constants go into its weights, not into ``D``, where a sum over
    processes would mix them: ``1 / T`` of ``seq-mean-token-mean`` without a mask (a
    process with a mask gives ``w / sum_t w`` already) and the factor of
    ``seq-mean-token-sum-norm`` (``T`` of this process's ``[B, T]`` by default, so that
    processes of different ``T`` divide each sequence by its own ``T``, as verl divides
    each micro-batch's). ``D`` is then ``N`` or ``sum w`` (``token-mean``) or ``S``.
    With one process, the value of :func:`aggregation_of_rows`.
    """
    check_loss_aggregation(sample_mask, loss_agg_mode, loss_scale_factor, leading_shape)
    weights = aggregation_row_weights(sample_mask, loss_agg_mode, leading_shape)
    if loss_agg_mode == "token-sum":
        return weights, None
    if loss_agg_mode == "token-mean":
        return weights, aggregation_denominator(sample_mask, loss_agg_mode, loss_scale_factor, leading_shape, device)
    per_row_scale = 1.0
    if loss_agg_mode == "seq-mean-token-sum-norm":
        per_row_scale = 1.0 / (float(leading_shape[-1]) if loss_scale_factor is None else loss_scale_factor)
    elif loss_agg_mode == "seq-mean-token-mean" and sample_mask is None:
        per_row_scale = 1.0 / float(leading_shape[-1])
    if per_row_scale != 1.0:
        if weights is None:
            weights = torch.full([_num_rows(leading_shape)], per_row_scale, dtype=torch.float64, device=device)
        else:
            weights = weights * per_row_scale
    return weights, _num_sequences(sample_mask, leading_shape, device)
