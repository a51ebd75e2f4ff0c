"""Per-token policy terms: the log-probability of the taken action and the entropy of a
categorical policy, from the same logits in one fused pass.

``log_prob_and_entropy`` is a thin wrapper around the compiled op
``torch.ops.hybrid_entropy_ext.log_prob_and_entropy``, TorchScript-able, and traced by
``torch.compile`` and ``torch.export`` without a graph break.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _ops  # noqa: F401  (registers the ops)

__all__ = ["log_prob_and_entropy"]


def log_prob_and_entropy(
    logits: Tensor,
    actions: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    temperature: float = 1.0,
    action_mask: Optional[Tensor] = None,
) -> Tuple[Optional[Tensor], Tensor]:
    """Log-probability of the taken actions and entropy of ``softmax(logits / temperature)``.

    One read of the logits computes both; the backward reads them once more and writes
    their gradient once, from ``O(rows)`` statistics the forward kept (never a saved
    ``[..., K]`` softmax). The pass a PPO or GRPO step makes twice (``log_softmax`` +
    ``gather``, then ``logsumexp - sum p z``).

    Args:
        logits: ``[..., K]`` unnormalized log-probabilities, any leading dims and strides
            (leading dims that do not flatten to one, such as a transposed ``[T, B, K]``,
            are copied into ``[N, K]`` first, as ``reshape`` does), float32, float64,
            bfloat16 or float16. ``-inf`` marks an impossible action:
            probability 0, gradient 0. A row whose every logit is ``-inf`` has entropy 0
            (and the log-probability of any action there is ``-inf``).
        actions: the taken actions, int64 or int32 of the leading shape ``[...]``, each in
            ``[0, K)``; ``None`` computes the entropy alone.
        mask: bool of the leading shape: rows where it is False give 0 and gradient 0
            and are not read (padding may hold anything, NaN included, and so may its
            actions).
        temperature: ``T > 0``: the distribution is that of ``logits / T`` (its
            gradient included), as sampling with a temperature draws from. ``1 / T`` must
            be finite in the accumulation dtype.
        action_mask: bool of the logits' shape ``[..., K]`` (any strides, e.g. one
            ``[K]`` row expanded to every sample): False rules an action out, exactly as
            a ``-inf`` logit whatever the logit holds (probability 0, gradient 0). It is
            read beside the logits in the same pass: no masked copy of the logits. A row
            with nothing allowed has entropy 0, and the log-probability of a ruled-out
            taken action is ``-inf``.

    Returns:
        ``(log_prob, entropy)``, each of the leading shape ``[...]``, in nats, float64 for
        float64 logits and float32 otherwise; ``log_prob`` is ``None`` without actions.

    Raises:
        ValueError: a shape or device mismatch (an action mask must have the logits'
            shape), ``K = 0``, or a temperature that is not a finite number > 0 (or
            whose inverse overflows the accumulation dtype).
        TypeError: non-floating logits, actions that are not int64/int32, a mask or an
            action mask that is not bool.
        IndexError: on the CPU, an action outside ``[0, K)`` in a row the mask keeps,
            naming its position. On CUDA a device-side assert, as ``torch.gather``
            raises (no host sync).

    Example::

        >>> logits = torch.randn(4, 16, 32000, requires_grad=True)   # [B, T, vocab]
        >>> tokens = torch.randint(0, 32000, (4, 16))
        >>> response_mask = torch.ones(4, 16, dtype=torch.bool)
        >>> log_prob, entropy = log_prob_and_entropy(logits, tokens, response_mask)
        >>> (-(log_prob * 1.0).sum() - 0.01 * entropy.sum()).backward()

    With an action mask (MaskablePPO's invalid actions)::

        >>> logits = torch.randn(64, 6, requires_grad=True)
        >>> allowed = torch.rand(64, 6) < 0.7
        >>> allowed[:, 0] = True                       # action 0 is always allowed
        >>> log_prob, entropy = log_prob_and_entropy(logits, torch.zeros(64, dtype=torch.long), action_mask=allowed)
    """
    log_prob, entropy, _ = torch.ops.hybrid_entropy_ext.log_prob_and_entropy(
        logits, actions, mask, temperature, action_mask
    )
    if actions is None:
        return None, entropy
    return log_prob, entropy
