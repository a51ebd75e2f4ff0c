"""The fused loss from what a policy already returns: ``torch.distributions`` objects.

:func:`hybrid_entropy_loss_from_distributions` reads the logits of a ``Categorical``
and the log standard deviations of a ``Normal`` (or ``Independent(Normal, n)``) and
calls the fused op on them, so a policy that hands out distributions gets the same
loss as one that hands out tensors, with the op's exact backward reaching the
distributions' parameters.

How batch shapes map to the op's ``[B, K]`` logits and ``[B, D]`` log-std:

- ``Categorical`` with batch shape ``S`` (logits ``S + [K]``): ``B = prod(S)``
  (``S = []`` is one sample).
- ``Normal`` with batch shape ``S + [D]`` (two or more dimensions): the **last**
  batch dimension is the action dimension, summed in the per-sample entropy (the
  joint entropy of a diagonal Gaussian, as Stable-Baselines3's ``entropy().sum(-1)``);
  ``B = prod(S)``. A batch shape ``[B]`` is a batch of one-dimensional actions
  (``[B, 1]``: a policy with a single continuous parameter), and ``[]`` the same
  one-dimensional Gaussian for every sample (a shared ``[1]`` log-std). (For a single sample with ``D`` dimensions, use
  ``Independent(Normal(loc [D], scale [D]), 1)``, or give ``loc`` a batch dimension.)
  A scale broadcast over the whole batch (a state-independent ``[D]`` log-std
  expanded to ``[B, D]``) is passed as the op's shared ``[D]`` log-std, without
  materializing ``[B, D]``.
- ``Independent(Normal, n)``: the ``n`` reinterpreted dimensions are the action
  dimensions (``D`` = their product), the remaining batch shape ``S`` gives
  ``B = prod(S)``. ``Independent(Normal(loc [B, D]), 1)`` (TorchRL's ``IndependentNormal``)
  is ``[B, D]``.

A ``torch.distributions.OneHotCategorical`` is read as the ``Categorical`` it samples from:
the same probabilities, hence the same entropy.

``Independent(Categorical, n)`` (logits ``S + R + [K]``, ``n = len(R)``) is a multi-discrete
head of ``prod(R)`` sub-heads of ``K`` actions each, in ``R``'s row-major order: its entropy is
their sum, as the op's ``discrete_sizes = [K] * prod(R)`` gives it (with the collapse
penalty on each sub-head), and ``B = prod(S)``.

Several ``Categorical`` s (of one batch shape) are one multi-discrete head, each a
sub-head in their order (the op's ``discrete_sizes``): a flat or nested list of them, as
Stable-Baselines3's ``MultiCategoricalDistribution.distribution`` holds them, or SB3's and
sb3-contrib's distribution wrappers themselves (read through their ``distribution`` or
``distributions`` attribute). A composite distribution (tensordict's
``CompositeDistribution``, which TorchRL's actors build for composite action spaces) is read
as the dict of its heads (its ``dists``), in their order.

The two heads must come out with the same ``B``. Anything whose entropy has no
closed form in these terms raises ``TypeError``.
"""

import math
import sys
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    OneHotCategorical,
    TransformedDistribution,
)

from .._validation import describe
from .loss import hybrid_entropy_loss

__all__ = ["PolicyHeads", "hybrid_entropy_loss_from_distributions", "policy_heads"]


def _built_from_probs(dist: Categorical) -> bool:
    """Whether ``dist`` was built with ``probs=``, whatever has been read from it since.

    ``probs`` and ``logits`` are lazy properties: the one given to the constructor is
    stored at once (and kept as ``_param``), the other is computed and cached on first
    use, so after ``log_prob()`` or ``entropy()`` both are in ``__dict__``. Only
    ``_param`` still tells which one was given.
    """
    probs = dist.__dict__.get("probs")
    return probs is not None and getattr(dist, "_param", None) is probs


def _categorical_logits(dist: Categorical) -> Tensor:
    """``[B, K]`` logits whose softmax is ``dist.probs``, -inf for probability 0."""
    if _built_from_probs(dist):
        # Built from probs: Categorical.logits clamps the probabilities to [eps, 1 - eps]
        # (log 1.2e-7 = -15.9 in float32), so a zero-probability action would get a share
        # of the softmax and of the entropy. log(0) = -inf is the op's "impossible action"
        # (probability 0, gradient 0); the inner where keeps log's backward from
        # computing 0 / 0 there.
        probs = dist.__dict__["probs"]
        positive = probs > 0
        logits = torch.where(positive, torch.log(torch.where(positive, probs, torch.ones_like(probs))), -torch.inf)
    else:
        logits = dist.logits  # normalized log-probabilities: the softmax is unchanged
    return logits.reshape(-1, logits.shape[-1])


def _broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether a tensor of ``shape`` expands to ``target`` (``Tensor.expand``'s rule)."""
    return len(shape) <= len(target) and all(
        size == 1 or size == wanted for size, wanted in zip(reversed(shape), reversed(target))
    )


def _categorical_action_mask(dist: Categorical) -> Optional[Tensor]:
    """``[B, K]`` bool: the actions a masked categorical allows, or ``None``.

    Read from sb3-contrib's ``MaskableCategorical`` (``masks``; its logits hold -1e8 where
    they are False, a probability that underflows but whose term its own ``entropy()``
    drops by hand) and TorchRL's ``MaskedCategorical`` with a dense mask (``_mask``; its
    logits hold ``neg_inf`` there, -inf unless set). The fused op then rules those actions
    out whatever the logits hold. TorchRL's sparse masks (indices) are read from the
    logits alone, exact with the default ``neg_inf``. A mask that broadcasts to the logits'
    shape (one row for the batch) is expanded to it, without a copy.
    """
    shape = dist._param.shape
    for name in ("masks", "_mask"):
        mask = dist.__dict__.get(name)
        if (
            isinstance(mask, Tensor)
            and mask.dtype == torch.bool
            and not dist.__dict__.get("_sparse_mask", False)
            and _broadcasts_to(mask.shape, shape)
        ):
            return mask.expand(shape).reshape(-1, shape[-1])
    return None


def _normal_log_std(dist: Distribution) -> Tensor:
    """``[B, D]`` log-std of a ``Normal`` or ``Independent(Normal, n)``, or ``[D]`` if shared."""
    if isinstance(dist, Independent):
        scale = dist.base_dist.scale
        action_dims = dist.reinterpreted_batch_ndims
    else:
        scale = dist.scale
        if scale.dim() == 0:  # one Gaussian for every sample: a shared [1] log-std
            return scale.reshape(1).log()
        # Batch shape [B]: one action dimension per sample; [..., D]: the last is D.
        action_dims = 1 if scale.dim() >= 2 else 0
    batch_dims = scale.dim() - action_dims
    d = math.prod(scale.shape[batch_dims:])
    # A scale broadcast over every batch dimension (stride 0, e.g. Normal(mean [B, D],
    # log_std.exp() [D])): the op's shared [D] log-std, the same entropy for each sample.
    if batch_dims > 0 and all(scale.stride(i) == 0 for i in range(batch_dims)):
        return scale[(0,) * batch_dims].reshape(d).log()
    return scale.reshape(-1, d).log()


def _samples(dist: Distribution) -> int:
    """The number of samples ``B`` of a head, from its batch shape (metadata only)."""
    shape = dist.batch_shape
    if isinstance(dist, Normal) and len(shape) >= 2:
        shape = shape[:-1]  # the last batch dimension of a plain Normal is the action dimension
    return math.prod(shape)


def _check_same_batch(categorical: Distribution, gaussian: Distribution) -> None:
    # Checked on the distributions' batch shapes: a scale shared by the batch goes to the op
    # as a [D] log-std, which fits any batch, so the op alone would not see a mismatch.
    if isinstance(gaussian, Normal) and len(gaussian.batch_shape) == 0:
        return  # one Gaussian for every sample
    b_d, b_c = _samples(categorical), _samples(gaussian)
    if b_d != b_c:
        raise ValueError(
            "hybrid_entropy_loss_from_distributions: the heads have different batch sizes: the discrete head's "
            f"batch shape {tuple(categorical.batch_shape)} holds {b_d} samples, the Gaussian's "
            f"{tuple(gaussian.batch_shape)} holds {b_c}"
        )


def _independent_base(dist: Independent) -> Any:
    """What an ``Independent`` (nested ones too) reinterprets, a ``OneHotCategorical`` read
    as its ``Categorical``."""
    base = dist.base_dist
    while isinstance(base, Independent):
        base = base.base_dist
    return _unwrapped(base)


def _is_categorical_head(dist: Any) -> bool:
    """A ``Categorical``, or an ``Independent`` of one (or of a ``OneHotCategorical``): a
    multi-discrete head whose sub-heads all have ``K`` actions."""
    if isinstance(dist, Independent):
        return isinstance(_independent_base(dist), Categorical)
    return isinstance(dist, Categorical)


def _discrete_part(dist: Distribution) -> Tuple[Tensor, Optional[Tensor], List[int]]:
    """A categorical head's ``[B, H * K]`` logits, action mask (or ``None``) and its
    sub-heads' sizes ``[K] * H``: ``H = 1`` for a ``Categorical``, the product of the
    reinterpreted dimensions for an ``Independent`` of one."""
    heads = 1
    if isinstance(dist, Independent):
        base = _independent_base(dist)
        heads = math.prod(base.batch_shape[len(dist.batch_shape) :])
        if heads == 0:
            raise ValueError(
                "hybrid_entropy_loss_from_distributions: an Independent(Categorical) whose reinterpreted "
                f"dimensions {tuple(base.batch_shape[len(dist.batch_shape) :])} hold no sub-head"
            )
    else:
        base = dist
    logits = _categorical_logits(base)  # [B * H, K]
    action_mask = _categorical_action_mask(base)
    k = logits.shape[-1]
    if heads > 1:
        logits = logits.reshape(-1, heads * k)
        action_mask = None if action_mask is None else action_mask.reshape(-1, heads * k)
    return logits, action_mask, [k] * heads


def _is_gaussian(dist: Any) -> bool:
    if isinstance(dist, Independent):
        return isinstance(dist.base_dist, Normal)
    return isinstance(dist, Normal)


def _reject(dist: Any, where: str) -> "TypeError":
    name = type(dist).__name__
    if isinstance(dist, TransformedDistribution):
        why = (
            f"{name} (such as a tanh-squashed Gaussian) has no closed-form entropy: the transform's "
            "log-det-Jacobian depends on the sample. Pass its base Normal for the entropy before the "
            "transform, or estimate the entropy as -log_prob of samples"
        )
    elif isinstance(dist, MixtureSameFamily):
        why = f"{name} (a mixture) has no closed-form entropy; estimate it as -log_prob of samples"
    elif isinstance(dist, Independent):
        why = f"Independent({type(dist.base_dist).__name__}) is neither a diagonal Gaussian nor categorical"
    elif isinstance(dist, Distribution):
        why = f"{name} is neither a Categorical nor a diagonal Gaussian (Normal, Independent(Normal, n))"
    else:
        why = f"expected a torch.distributions.Distribution, got {describe(dist)}"
    return TypeError(f"hybrid_entropy_loss_from_distributions: {where}: {why}")


def _unwrapped(dist: Any) -> Any:
    """The torch distribution(s) inside a Stable-Baselines3 / sb3-contrib wrapper (its
    ``distribution``, or ``distributions`` for sb3-contrib's masked multi-categorical), the
    heads of a composite distribution (its ``dists``, a dict, as tensordict's
    ``CompositeDistribution`` holds them), the
    ``Categorical`` of a ``OneHotCategorical`` (its ``_categorical``); anything else as it is."""
    if isinstance(dist, OneHotCategorical):
        return dist._categorical
    if isinstance(dist, Distribution) and not isinstance(getattr(dist, "dists", None), Mapping):
        return dist
    if _squashes(dist):
        # Its `distribution` is the Gaussian before the tanh: read, it would give the
        # entropy of an action the policy does not take.
        raise TypeError(
            f"hybrid_entropy_loss_from_distributions: {type(dist).__name__} squashes its Gaussian "
            "(tanh): the squashed action's entropy has no closed form (the log-det-Jacobian depends "
            "on the sample). Train without squashing, or estimate the entropy as -log_prob of samples"
        )
    heads = getattr(dist, "dists", None)
    if isinstance(heads, Mapping):  # tensordict's CompositeDistribution (TorchRL): its heads by name
        return dict(heads)
    for name in ("distributions", "distribution"):
        inner = getattr(dist, name, None)
        if isinstance(inner, Distribution) or (
            isinstance(inner, (list, tuple)) and inner and all(isinstance(d, Distribution) for d in inner)
        ):
            return inner
    return dist


def _squashes(dist: Any) -> bool:
    """Whether ``dist`` is a Stable-Baselines3 wrapper of a tanh-squashed Gaussian: its
    ``SquashedDiagGaussianDistribution``, or a gSDE ``StateDependentNoiseDistribution`` with
    ``squash_output`` (which holds a ``bijector``). Read without importing SB3."""
    if getattr(dist, "bijector", None) is not None:
        return True
    sb3_distributions = sys.modules.get("stable_baselines3.common.distributions")
    squashed = getattr(sb3_distributions, "SquashedDiagGaussianDistribution", None)
    return isinstance(squashed, type) and isinstance(dist, squashed)


def _holds_only_categoricals(dist: Any) -> bool:
    """Whether ``dist`` is a Categorical (or what reads as one, an ``Independent`` of one
    included), or a non-empty list or tuple, nested to any depth, of nothing else: a
    multi-discrete head's sub-heads."""
    dist = _unwrapped(dist)
    if isinstance(dist, (list, tuple)):
        return len(dist) > 0 and all(_holds_only_categoricals(d) for d in dist)
    return _is_categorical_head(dist)


def _split_heads(dists: Any) -> Tuple[List[Distribution], Optional[Distribution]]:
    """The categorical heads (one, or a multi-discrete head's parts, in order:
    ``Categorical`` s or ``Independent`` s of one) and the one Gaussian of a distribution,
    a tuple/list (possibly nested) or a dict."""
    dists = _unwrapped(dists)
    if isinstance(dists, Distribution):
        items: List[Tuple[str, Any]] = [("dists", dists)]
    elif isinstance(dists, Mapping):
        items = [(f"dists[{key!r}]", value) for key, value in dists.items()]
    elif isinstance(dists, (tuple, list)):
        items = [(f"dists[{i}]", value) for i, value in enumerate(dists)]
    else:
        raise TypeError(
            "hybrid_entropy_loss_from_distributions: dists: expected a Categorical, a Normal or "
            "Independent(Normal, n), or a tuple, list or dict holding one of each; got "
            f"{describe(dists)}"
        )
    if len(items) == 0:
        raise ValueError("hybrid_entropy_loss_from_distributions: dists: expected at least one distribution, got none")
    categoricals: List[Distribution] = []
    gaussian: Optional[Distribution] = None
    while items:
        where, dist = items.pop(0)
        dist = _unwrapped(dist)
        if isinstance(dist, (list, tuple)) and _holds_only_categoricals(dist):
            items[:0] = [(f"{where}[{i}]", d) for i, d in enumerate(dist)]  # sub-heads, in order
        elif _is_categorical_head(dist):
            categoricals.append(dist)
        elif _is_gaussian(dist):
            if gaussian is not None:
                raise ValueError(
                    f"hybrid_entropy_loss_from_distributions: {where}: a second Gaussian; expected at most "
                    "one discrete and one continuous head"
                )
            gaussian = dist
        else:
            raise _reject(dist, where)
    return categoricals, gaussian


def _sub_heads(categoricals: List[Distribution]) -> Tuple[Tensor, Optional[Tensor], Optional[List[int]]]:
    """The discrete head's ``[B, K]`` logits, action mask and ``discrete_sizes`` (``None``
    for one categorical of ``K``) from its parts (:func:`_discrete_part`)."""
    if len(categoricals) > 1:
        shapes = [tuple(c.batch_shape) for c in categoricals]
        if any(shape != shapes[0] for shape in shapes):
            raise ValueError(
                "hybrid_entropy_loss_from_distributions: the Categoricals of a multi-discrete head must share "
                f"one batch shape, got {shapes}"
            )
    parts = [_discrete_part(c) for c in categoricals]
    sizes = [k for _, _, part_sizes in parts for k in part_sizes]
    if len(parts) == 1:
        logits, action_mask, _ = parts[0]
        return logits, action_mask, sizes if len(sizes) > 1 else None
    action_mask = None
    if any(m is not None for _, m, _ in parts):
        action_mask = torch.cat(
            [m if m is not None else torch.ones_like(z, dtype=torch.bool) for z, m, _ in parts], dim=-1
        )
    return torch.cat([z for z, _, _ in parts], dim=-1), action_mask, sizes


class PolicyHeads(NamedTuple):
    """The fused op's inputs read from a policy's distributions (:func:`policy_heads`).

    Attributes:
        logits: the discrete head's ``[..., K]`` logits (a multi-discrete head's
            sub-heads side by side), or ``None``.
        log_std: the Gaussian head's ``[B, D]`` log-std, ``[D]`` where one scale is
            broadcast over the batch, or ``None``.
        action_mask: ``[..., K]`` bool of a masked categorical (``False``: ruled out), or
            ``None``.
        discrete_sizes: the sub-heads' sizes of a multi-discrete head, or ``None``.
    """

    logits: Optional[Tensor]
    log_std: Optional[Tensor]
    action_mask: Optional[Tensor]
    discrete_sizes: Optional[List[int]]


def policy_heads(dists: Union[Distribution, Sequence[Distribution], Mapping[str, Distribution], Any]) -> PolicyHeads:
    """What :func:`hybrid_entropy_loss_from_distributions` passes to the op, for a caller
    that passes it on itself (a :class:`~hybrid_entropy_ext.HybridEntropyRegularizer`, a
    trainer's integration): the same reading of ``dists`` (the module docstring), the same
    errors. Gradients reach the distributions' parameters through the returned tensors.

    Example (a scale shared by the batch is the ``[D]`` log-std)::

        >>> heads = policy_heads((Categorical(logits=torch.randn(8, 4)), Normal(torch.zeros(8, 2), 1.0)))
        >>> heads.logits.shape, heads.log_std.shape, heads.discrete_sizes
        (torch.Size([8, 4]), torch.Size([2]), None)
    """
    categoricals, gaussian = _split_heads(dists)
    if categoricals and gaussian is not None:
        _check_same_batch(categoricals[0], gaussian)
    logits, action_mask, discrete_sizes = _sub_heads(categoricals) if categoricals else (None, None, None)
    log_std = _normal_log_std(gaussian) if gaussian is not None else None
    return PolicyHeads(logits, log_std, action_mask, discrete_sizes)


def hybrid_entropy_loss_from_distributions(
    dists: Union[Distribution, Sequence[Distribution], Mapping[str, Distribution]],
    entropy_coeff: Union[float, Tensor],
    discrete_entropy_weight: float = 1.0,
    continuous_entropy_weight: float = 0.5,
    min_entropy_threshold: Optional[float] = 0.1,
    continuous_min_entropy_threshold: Optional[float] = 0.1,
    penalty_multiplier: float = 3.0,
    discrete_head_thresholds: Optional[List[float]] = None,
) -> Dict[str, Tensor]:
    """:func:`~hybrid_entropy_ext.hybrid_entropy_loss` on a policy's action distributions.

    Args:
        dists: a ``Categorical`` (discrete head), a ``Normal`` or
            ``Independent(Normal, n)`` (continuous head), or a tuple, list or dict
            holding one of each in any order (for example a policy's
            ``{"discrete": Categorical(...), "continuous": Normal(...)}``). A single
            distribution, or a container with one, is a policy with one head.
            ``Categorical(probs=...)`` works too: zero probabilities become ``-inf``
            logits (masked actions, gradient 0), also after ``log_prob()`` or
            ``entropy()`` has cached the distribution's clamped ``logits`` (what the
            constructor was given decides). A masked categorical's mask
            (sb3-contrib's ``MaskableCategorical``, TorchRL's ``MaskedCategorical``)
            goes to the op as its ``action_mask``: the ruled-out actions get
            probability 0 and gradient 0 exactly, whatever their logits hold. Several
            Categoricals of one batch shape (a flat or nested list, or SB3's
            ``MultiCategoricalDistribution``) are a multi-discrete head: its
            sub-heads, in order, with the op's per-sub-head penalties
            (``discrete_sizes``; the output adds ``discrete_entropy_per_head``); so
            is ``Independent(Categorical(logits [B, H, K]), 1)``, ``H`` sub-heads. See
            the module docstring for how batch shapes map to ``[B, K]`` and ``[B, D]``.
        entropy_coeff, discrete_entropy_weight, continuous_entropy_weight,
        min_entropy_threshold, continuous_min_entropy_threshold, penalty_multiplier:
            as for :func:`~hybrid_entropy_ext.hybrid_entropy_loss` (same defaults).
            The coefficient may also be a NumPy scalar.
        discrete_head_thresholds: one threshold per sub-head of a multi-discrete
            head, as for :func:`~hybrid_entropy_ext.hybrid_entropy_loss`.

    Returns:
        The op's seven 0-dim tensors (and ``discrete_entropy_per_head`` for a
        multi-discrete head). Gradients reach the distributions' parameters
        (``logits`` or ``probs``, ``scale``) through the op's exact backward.

    Raises:
        TypeError: a distribution without a closed-form entropy here (a
            ``TransformedDistribution`` such as a tanh-squashed Gaussian, SB3's
            ``SquashedDiagGaussianDistribution`` or gSDE with ``squash_output``, a
            ``MixtureSameFamily``, ...), anything else that is neither a
            ``Categorical`` nor a diagonal Gaussian, or ``dists`` of another type.
        ValueError: two Gaussians, no distribution, Categoricals of different batch
            shapes, or the heads' batch shapes hold different numbers of samples
            (checked on the distributions' batch shapes before the op is called).

    Example::

        >>> logits, mean, log_std = torch.randn(16, 4), torch.randn(16, 2), torch.zeros(2)
        >>> policy_out = {"op": Categorical(logits=logits), "params": Normal(mean, log_std.exp())}
        >>> out = hybrid_entropy_loss_from_distributions(policy_out, 0.01, 1.0, 1.0, None, None)
        >>> loss = out["total"]   # -0.01 * (H_d + H_c): Stable-Baselines3's term, for the joint policy
        >>> loss.shape
        torch.Size([])

    A multi-discrete policy (SB3's ``MultiCategoricalDistribution.distribution``)::

        >>> heads = [Categorical(logits=z) for z in torch.randn(16, 10).split([3, 5, 2], dim=1)]
        >>> out = hybrid_entropy_loss_from_distributions(heads, 0.01, min_entropy_threshold=0.3)
        >>> out["discrete_entropy_per_head"].shape
        torch.Size([3])
    """
    heads = policy_heads(dists)
    return hybrid_entropy_loss(
        heads.logits,
        heads.log_std,
        entropy_coeff,
        discrete_entropy_weight,
        continuous_entropy_weight,
        min_entropy_threshold,
        continuous_min_entropy_threshold,
        penalty_multiplier,
        action_mask=heads.action_mask,
        discrete_sizes=heads.discrete_sizes,
        discrete_head_thresholds=discrete_head_thresholds,
    )
