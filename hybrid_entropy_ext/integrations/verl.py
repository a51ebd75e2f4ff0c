"""Drop-ins for verl's entropy functions, fused.

verl (0.9.1) takes a token's entropy as ``logsumexp(z) - sum softmax(z) * z``, which writes
the ``[..., V]`` softmax out (``verl.utils.torch_functional.entropy_from_logits``, or in row
chunks), and its entropy loss as that, aggregated by ``agg_loss``
(``verl.trainer.ppo.core_algos.compute_entropy_loss``). These functions keep those
signatures and semantics and compute the entropies, and the aggregated loss with its
gradient, in the library's one fused pass, with no ``[..., V]`` intermediate:
:func:`hybrid_entropy_ext.log_prob_and_entropy` per token,
:func:`hybrid_entropy_ext.hybrid_entropy_loss` aggregated (the same five ``loss_agg_mode``
values, on one process).

Use them by name, or put them in verl's place before its workers are built::

    from hybrid_entropy_ext.integrations import verl as hee_verl
    hee_verl.apply_to_verl()

This module imports verl only in :func:`apply_to_verl`.
"""

import torch
from torch import Tensor

from ..ops import hybrid_entropy_loss, log_prob_and_entropy
from .patching import FunctionPatches, patch_functions

__all__ = [
    "entropy_from_logits",
    "entropy_from_logits_with_chunking",
    "compute_entropy_loss",
    "apply_to_verl",
]


def entropy_from_logits(logits: Tensor) -> Tensor:
    """``verl.utils.torch_functional.entropy_from_logits``: the entropy in nats of each row
    of ``logits`` ``[..., V]``, of the leading shape ``[...]`` in the logits' dtype
    (accumulated in float32, float64 for float64 logits, then rounded to it).

    ``-inf`` logits (impossible tokens) give probability 0; a row's entropy stays finite,
    where ``logsumexp - sum p z`` gives NaN (``0 * -inf``).

    Example::

        >>> logits = torch.randn(2, 8, 1000, requires_grad=True)    # [B, T, V]
        >>> entropy = entropy_from_logits(logits)                   # [2, 8]
        >>> entropy.sum().backward()
    """
    return log_prob_and_entropy(logits)[1].to(logits.dtype)


def entropy_from_logits_with_chunking(logits: Tensor, chunk_size: int = 2048) -> Tensor:
    """``verl.utils.torch_functional.entropy_from_logits_with_chunking``: the entropies of
    the rows of ``logits`` ``[N, V]``, ``[N]`` float32 whatever the logits' dtype, as
    verl's (accumulated in float64 for float64 logits, then rounded).
    ``chunk_size`` is accepted for the signature's sake: the fused pass keeps no
    ``[chunk, V]`` copy, so there is nothing to chunk.

    Example::

        >>> entropy_from_logits_with_chunking(torch.zeros(3, 4))   # log(4) per row
        tensor([1.3863, 1.3863, 1.3863])
    """
    del chunk_size
    return log_prob_and_entropy(logits)[1].float()


def compute_entropy_loss(logits: Tensor, response_mask: Tensor, loss_agg_mode: str = "token-mean") -> Tensor:
    """``verl.trainer.ppo.core_algos.compute_entropy_loss``: the tokens' entropies of
    ``logits`` aggregated over the response tokens as verl's ``agg_loss`` does on one
    process, fused.

    Args:
        logits: ``[B, T, V]`` (any leading dims for the token modes), any floating dtype.
        response_mask: ``[B, T]``, bool or numeric: each token's weight (0: padding, left
            out of the sums and the counts).
        loss_agg_mode: ``"token-mean"`` (``sum w h / sum w``), ``"token-sum"``,
            ``"seq-mean-token-sum"``, ``"seq-mean-token-sum-norm"`` (divided by ``T``) or
            ``"seq-mean-token-mean"``; the sequence modes average over the sequences with
            some weight.

    Returns:
        A 0-dim tensor in the logits' dtype, differentiable with respect to ``logits``.
        Padding rows are read but get gradient 0. A mask with no weight at all gives
        NaN for ``token-mean`` (``0 / 0``, as verl's).

    Raises:
        ValueError: an unknown mode, a sequence mode without ``[B, T]`` leading dims, or a
            mask not of the leading shape.

    Example::

        >>> logits = torch.randn(4, 16, 100, requires_grad=True)
        >>> response_mask = torch.arange(16) < torch.tensor([[16], [9], [3], [12]])
        >>> loss = compute_entropy_loss(logits, response_mask, "seq-mean-token-mean")
        >>> loss.backward()
    """
    weights = response_mask
    if not (weights.dtype == torch.bool or weights.is_floating_point()):
        weights = weights.to(torch.float64)
    out = hybrid_entropy_loss(
        logits,
        None,
        0.0,
        min_entropy_threshold=None,
        sample_mask=weights,
        loss_agg_mode=loss_agg_mode,
    )
    return out["discrete_entropy"].to(logits.dtype)


def apply_to_verl() -> FunctionPatches:
    """Put this module's functions in the place of verl's
    (``verl.utils.torch_functional.entropy_from_logits`` and
    ``entropy_from_logits_with_chunking``, ``verl.trainer.ppo.core_algos.compute_entropy_loss``),
    where verl's modules look them up. Call it before verl's workers are built: its engines
    take ``verl_F.entropy_from_logits`` when they are constructed.

    Returns:
        The patches; ``.undo()`` restores verl's functions.

    Raises:
        ImportError: verl (or what those modules import: ray among others) is not installed.
    """
    return patch_functions(
        {
            "verl.utils.torch_functional": {
                "entropy_from_logits": entropy_from_logits,
                "entropy_from_logits_with_chunking": entropy_from_logits_with_chunking,
            },
            "verl.trainer.ppo.core_algos": {"compute_entropy_loss": compute_entropy_loss},
        }
    )
