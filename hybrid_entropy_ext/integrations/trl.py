"""Drop-ins for TRL's per-token log-probability and entropy functions, fused.

TRL (1.16) computes a token's log-probability and the policy's entropy from the same logits
in a Triton kernel (``trl.kernels.selective_log_softmax_and_entropy``) on CUDA only, and
otherwise in chunked PyTorch passes (``trl.trainer.utils``). These functions keep those
signatures and semantics and compute both in the library's one fused pass
(:func:`hybrid_entropy_ext.log_prob_and_entropy`), without Triton, deterministic,
exportable, with the exact backward: on the CPU, and on CUDA through the op's CUDA kernels
(compiled and tested on the host emulation, not yet run on a GPU).

Use them by name, or put them in TRL's place before the trainer is built::

    from hybrid_entropy_ext.integrations import trl as hee_trl
    hee_trl.apply_to_trl()     # trl.trainer.utils' three functions, where TRL looks them up

This module imports TRL only in :func:`apply_to_trl`.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..ops import log_prob_and_entropy
from .patching import FunctionPatches, patch_functions

__all__ = [
    "selective_log_softmax_and_entropy",
    "selective_log_softmax",
    "entropy_from_logits",
    "selective_log_softmax_and_entropy_of_trainer_utils",
    "apply_to_trl",
]


def _kept_rows(row_mask: Optional[Tensor]) -> Optional[Tensor]:
    """TRL's row mask (any dtype; 0 drops a row) as the op's bool mask."""
    if row_mask is None or row_mask.dtype == torch.bool:
        return row_mask
    return row_mask != 0


def selective_log_softmax_and_entropy(
    logits: Tensor,
    index: Tensor,
    temperature: float = 1.0,
    row_mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """The log-probability of ``index`` and the entropy of ``softmax(logits / temperature)``,
    as TRL's fused kernel ``trl.kernels.selective_log_softmax_and_entropy`` gives them.

    Args:
        logits: ``[..., V]`` (e.g. ``[B, T, V]``), float32, float64, bfloat16 or float16,
            any strides.
        index: the selected tokens, int64 (or int32) of the leading shape ``[...]``, each in
            ``[0, V)``.
        temperature: ``T > 0``; the distribution is that of ``logits / T``.
        row_mask: of the leading shape, any dtype: rows where it is 0 give 0 and 0 and
            gradient 0, and are not read. ``None``: every row counts.

    Returns:
        ``(log_probs, entropy)``, float32 of the leading shape (TRL's kernel's dtype
        whatever the logits'), differentiable with respect to ``logits``.

    Raises:
        ValueError: a temperature that is not a finite number > 0, or shapes that do not
            match. IndexError: on the CPU, a token outside ``[0, V)`` in a kept row.

    Example::

        >>> logits = torch.randn(2, 8, 1000, requires_grad=True)       # [B, T, V]
        >>> tokens = torch.randint(0, 1000, (2, 8))
        >>> completion_mask = torch.ones(2, 8, dtype=torch.long)
        >>> logps, entropy = selective_log_softmax_and_entropy(logits, tokens, row_mask=completion_mask)
        >>> logps.dtype, entropy.shape
        (torch.float32, torch.Size([2, 8]))
    """
    log_prob, entropy = log_prob_and_entropy(logits, index, _kept_rows(row_mask), temperature)
    assert log_prob is not None
    return log_prob.float(), entropy.float()


def selective_log_softmax(
    logits: Tensor,
    index: Tensor,
    temperature: float = 1.0,
    row_mask: Optional[Tensor] = None,
) -> Tensor:
    """``trl.trainer.utils.selective_log_softmax``: the log-probabilities of ``index`` under
    ``softmax(logits / temperature)``, rows where ``row_mask`` is 0 giving 0.

    Args:
        logits: ``[..., V]``, any floating dtype.
        index: ``[...]`` (one token per row: fused) or ``[..., K]`` (``K`` tokens per row,
            e.g. a top-K: ``log_softmax`` then ``gather``, as TRL's own, not fused).
        temperature: ``T > 0``.
        row_mask: of ``index``'s shape, any dtype; 0 gives 0.

    Returns:
        ``index``'s shape; float32 for one token per row (the fused kernel's dtype), the
        logits' dtype for ``K`` per row.

    Example::

        >>> logps = selective_log_softmax(torch.randn(4, 50), torch.randint(0, 50, (4,)))
    """
    if index.dim() == logits.dim() - 1:
        return selective_log_softmax_and_entropy(logits, index, temperature, row_mask)[0]
    if not temperature > 0:
        raise ValueError(f"selective_log_softmax: temperature must be > 0, got {temperature!r}")
    log_probs = torch.log_softmax(logits / temperature if temperature != 1.0 else logits, dim=-1)
    selected = torch.gather(log_probs, dim=-1, index=index)
    if row_mask is not None:
        selected = selected.masked_fill(row_mask == 0, 0.0)
    return selected


def entropy_from_logits(logits: Tensor, chunk_size: int = 128) -> Tensor:
    """``trl.trainer.utils.entropy_from_logits``: the entropy in nats of each row of
    ``logits`` ``[..., V]``, of the leading shape ``[...]``, float32 (float64 for float64
    logits). ``chunk_size`` is accepted for the signature's sake: one fused pass over the
    rows keeps no ``[chunk, V]`` copy, so there is nothing to chunk.

    Example::

        >>> entropy_from_logits(torch.zeros(3, 4))    # log(4) per row
        tensor([1.3863, 1.3863, 1.3863])
    """
    del chunk_size
    return log_prob_and_entropy(logits)[1]


def selective_log_softmax_and_entropy_of_trainer_utils(
    logits: Tensor,
    index: Tensor,
    entropy_requires_grad: bool = True,
    temperature: float = 1.0,
    row_mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """``trl.trainer.utils.selective_log_softmax_and_entropy``, whose third argument says
    whether the entropy keeps its gradient: :func:`selective_log_softmax_and_entropy`, the
    entropy detached when ``entropy_requires_grad`` is False (its gradient then costs
    nothing in the backward: the op skips what no output asks for).

    Example::

        >>> logits = torch.randn(4, 50, requires_grad=True)
        >>> logps, entropy = selective_log_softmax_and_entropy_of_trainer_utils(
        ...     logits, torch.randint(0, 50, (4,)), entropy_requires_grad=False)
        >>> entropy.requires_grad
        False
    """
    log_probs, entropy = selective_log_softmax_and_entropy(logits, index, temperature, row_mask)
    return log_probs, entropy if entropy_requires_grad else entropy.detach()


def apply_to_trl() -> FunctionPatches:
    """Put this module's functions in the place of ``trl.trainer.utils``'
    ``selective_log_softmax_and_entropy``, ``selective_log_softmax`` and
    ``entropy_from_logits``, in that module and wherever TRL's loaded modules bound them
    (its experimental trainers import them by name). Call it before building a trainer.

    TRL 1.16's ``GRPOTrainer`` computes its tokens' log-probabilities and entropies inside
    its fused LM head (``add_fused_lm_head``), not through these functions; the trainers
    that call them (TPO, SDPO, A2PO, ORPO, CPO, SDFT) and user code that imports them get
    the fused pass.

    Returns:
        The patches; ``.undo()`` restores TRL's functions.

    Raises:
        ImportError: TRL (or what ``trl.trainer.utils`` imports) is not installed.

    Example::

        >>> from hybrid_entropy_ext.integrations.trl import apply_to_trl
        >>> patches = apply_to_trl()
        >>> import trl.trainer.utils
        >>> trl.trainer.utils.entropy_from_logits is entropy_from_logits
        True
        >>> patches.undo()
    """
    return patch_functions(
        {
            "trl.trainer.utils": {
                "selective_log_softmax_and_entropy": selective_log_softmax_and_entropy_of_trainer_utils,
                "selective_log_softmax": selective_log_softmax,
                "entropy_from_logits": entropy_from_logits,
            }
        }
    )
