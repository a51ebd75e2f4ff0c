"""Per-token policy terms: the log-probability of the taken action and the entropy of a
categorical policy, from the same logits in one fused pass.

``log_prob_and_entropy`` is a thin wrapper around the compiled op
``torch.ops.hybrid_entropy_ext.log_prob_and_entropy``, TorchScript-able, and traced by
``torch.compile`` and ``torch.export`` without a graph break.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .. import _ops  # noqa: F401  (registers the ops)
from .._validation import check_op_integers, check_op_real, check_op_tensors

__all__ = ["log_prob_and_entropy"]

_TENSOR_ARGUMENTS = ("logits", "actions", "mask", "action_mask")


def log_prob_and_entropy(
    logits: Tensor,
    actions: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    temperature: float = 1.0,
    action_mask: Optional[Tensor] = None,
    discrete_sizes: Optional[List[int]] = None,
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
            lie within ``[1 / sqrt(max), sqrt(max)]`` of the accumulation dtype (float32
            logits: ``T`` from about ``5.4e-20`` to ``1.8e19``).
        action_mask: bool of the logits' shape ``[..., K]`` (any strides, e.g. one
            ``[K]`` row expanded to every sample): False rules an action out, exactly as
            a ``-inf`` logit whatever the logit holds (probability 0, gradient 0). It is
            read beside the logits in the same pass: no masked copy of the logits. A row
            with nothing allowed has entropy 0, and the log-probability of a ruled-out
            taken action is ``-inf``.
        discrete_sizes: ``[K_1, ..., K_H]``, positive and summing to ``K``: the logits'
            columns are ``H`` sub-heads, each its own categorical (SB3's MultiDiscrete
            layout). ``actions`` are then ``[..., H]``, sub-head ``h``'s in
            ``[0, K_h)``, and each row's ``log_prob`` and ``entropy`` are the sums over
            its sub-heads, as SB3's ``MultiCategoricalDistribution`` gives them.

    Returns:
        ``(log_prob, entropy)``, each of the leading shape ``[...]``, in nats, float64 for
        float64 logits and float32 otherwise; ``log_prob`` is ``None`` without actions.
        Differentiable once: the backward has no derivative of its own, so a second
        backward through a ``create_graph=True`` gradient raises.

    Raises:
        ValueError: a shape or device mismatch (an action mask must have the logits'
            shape; with ``discrete_sizes`` actions must be ``[..., H]``), ``K = 0``, a
            temperature that is not a finite number > 0 (or whose inverse is outside
            that range), or ``discrete_sizes`` that are empty, not positive or
            do not sum to ``K``.
        TypeError: logits that are not a tensor (an ``actions``, ``mask`` or
            ``action_mask`` neither a tensor nor ``None``), non-floating logits, actions
            that are not int64/int32, a mask or an action mask that is not bool.
        IndexError: on the CPU, an action outside ``[0, K)`` (its sub-head's ``[0, K_h)``)
            in a row the mask keeps, naming its position. On CUDA a device-side assert, as
            ``torch.gather`` raises (no host sync).

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

    A multi-discrete policy (three sub-decisions of 3, 5 and 2 choices)::

        >>> logits = torch.randn(64, 10, requires_grad=True)
        >>> actions = torch.stack([torch.randint(0, k, (64,)) for k in (3, 5, 2)], dim=-1)  # [64, 3]
        >>> log_prob, entropy = log_prob_and_entropy(logits, actions, discrete_sizes=[3, 5, 2])
        >>> log_prob.shape
        torch.Size([64])
    """
    if not torch.jit.is_scripting():
        # As hybrid_entropy_loss checks its arguments: in eager code and traced by
        # torch.compile, not scripted.
        check_op_tensors(
            "log_prob_and_entropy", _TENSOR_ARGUMENTS, (logits, actions, mask, action_mask), num_required=1
        )
        temperature = check_op_real("log_prob_and_entropy", "temperature", temperature)
        discrete_sizes = check_op_integers("log_prob_and_entropy", "discrete_sizes", discrete_sizes)
    log_prob, entropy, _ = torch.ops.hybrid_entropy_ext.log_prob_and_entropy(
        logits, actions, mask, temperature, action_mask, discrete_sizes
    )
    if actions is None:
        return None, entropy
    return log_prob, entropy
