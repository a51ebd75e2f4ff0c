"""TorchRL's PPO losses with the entropy regularizer as their entropy term.

:class:`ClipPPOLoss`, :class:`PPOLoss` and :class:`KLPENPPOLoss` are TorchRL's, with one
more keyword, ``entropy_regularization``. Their ``loss_entropy`` is the
:class:`~hybrid_entropy_ext.HybridEntropyRegularizer`'s ``total``, computed in the fused op
from the policy's distribution (a ``Categorical``, TorchRL's ``MaskedCategorical`` or
``OneHotCategorical``, a diagonal Gaussian, or a composite distribution of categorical
heads, a multi-discrete head's sub-heads with one penalty each, and at most one
Gaussian head); everything else is TorchRL's. Every output of the
regularizer is in the output TensorDict under ``"entropy_regularization"`` (detached:
``loss_entropy`` carries the gradient), ``"entropy"`` is ``H_d + H_c``, and a loss mask in
the input (TorchRL's ``loss_mask_key``) is the regularizer's sample mask.

The schedule's position is the regularizer's ``episode_counter``
(``loss.entropy_regularizer.step(episodes)`` in the training loop); after each optimizer
step, :meth:`RegularizedPPOLoss.update_controllers` steps an adaptive controller. This
module imports TorchRL (``pip install ".[torchrl]"``).
"""

from typing import Any, Dict, Optional

import torch
import torchrl.objectives
from tensordict import TensorDictBase
from tensordict.nn import dispatch
from torch import Tensor

from ..ops import policy_heads
from ..regularization import HybridEntropyRegularizer
from .entropy_regularization import EntropyRegularization, entropy_regularization_config

__all__ = ["ClipPPOLoss", "PPOLoss", "KLPENPPOLoss", "RegularizedPPOLoss"]

#: Where the regularizer's outputs go in the loss's output TensorDict.
OUTPUT_KEY = "entropy_regularization"


class RegularizedPPOLoss:
    """The regularizer as a TorchRL PPO loss's entropy term; mixed in before the loss class.

    Args:
        *args, **kwargs: the TorchRL loss's (``entropy_coeff`` left out: the config's
            coefficients replace it; ``reduction`` ``"mean"``, the default).
        entropy_regularization: an :class:`~hybrid_entropy_ext.EntropyRegularizationConfig`,
            a dict of its YAML keys or a preset name (``"plain"``: TorchRL's
            ``entropy_coeff=0.01`` on the heads' summed entropy, exactly).

    Attributes:
        entropy_regularizer: the :class:`~hybrid_entropy_ext.HybridEntropyRegularizer`, a
            submodule (its state, a ``sac`` controller's parameter included, is the loss's).

    Raises:
        ValueError: no ``entropy_regularization``, an ``entropy_coeff`` beside it,
            ``entropy_bonus=False``, or a ``reduction`` other than ``"mean"``.
    """

    def __init__(self, *args: Any, entropy_regularization: EntropyRegularization = None, **kwargs: Any) -> None:
        config = entropy_regularization_config(entropy_regularization)
        if config is None:
            raise ValueError(
                f"{type(self).__name__}: entropy_regularization is required (a config, a dict of its YAML keys or a "
                "preset name); use torchrl.objectives for the stock loss"
            )
        for argument in ("entropy_coeff", "entropy_bonus"):
            if argument in kwargs:
                raise ValueError(
                    f"{type(self).__name__}: {argument} is set by entropy_regularization (the config's coefficients "
                    f"replace it); got {argument}={kwargs[argument]!r}"
                )
        super().__init__(*args, **kwargs)
        if self.reduction != "mean":
            raise ValueError(
                f"{type(self).__name__}: the regularizer's loss is a mean over the batch; reduction must be 'mean', "
                f"got {self.reduction!r}"
            )
        self.entropy_regularizer = HybridEntropyRegularizer(config)
        self._entropy_outputs: Optional[Dict[str, Tensor]] = None
        self._sample_mask: Optional[Tensor] = None

    def _input_loss_mask(self, tensordict: TensorDictBase) -> Optional[Tensor]:
        """The input's loss mask, where TorchRL's reduction would read one (bool, trailing
        singleton dims dropped)."""
        for key in self._loss_mask_keys():
            mask = tensordict.get(key, default=None)
            if mask is not None:
                while mask.dim() > tensordict.batch_dims and mask.shape[-1] == 1:
                    mask = mask.squeeze(-1)
                return mask.bool()
        return None

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._sample_mask = self._input_loss_mask(tensordict)
        try:
            td_out = super().forward(tensordict)
        finally:
            self._sample_mask = None
        # Kept for update_controllers, without the graph.
        self._entropy_outputs = {key: value.detach() for key, value in self._entropy_outputs.items()}
        for key, value in self._entropy_outputs.items():
            td_out.set((OUTPUT_KEY, key), value)
        return td_out

    def _get_entropy(self, dist: Any, adv_shape: torch.Size) -> Tensor:
        heads = policy_heads(dist)
        regularizer = self.entropy_regularizer
        if heads.discrete_sizes is not None and regularizer.discrete_sizes != heads.discrete_sizes:
            if regularizer.discrete_sizes is not None:
                raise ValueError(
                    f"{type(self).__name__}: the policy's discrete heads have sizes {heads.discrete_sizes}, the "
                    f"config's discrete_sizes are {regularizer.discrete_sizes}"
                )
            # Several categorical heads: sub-heads of the discrete entropy, in the
            # distribution's order, as the config's discrete_sizes would give them.
            regularizer.discrete_sizes = list(heads.discrete_sizes)
        mask = self._sample_mask
        if mask is not None:
            # The heads come flattened to rows ([N, K], [N, D]): the mask's rows alike.
            rows = heads.logits if heads.logits is not None else heads.log_std
            if rows.dim() >= 2:
                mask = mask.expand(adv_shape).reshape(rows.shape[:-1])
        out = regularizer(heads.logits, heads.log_std, sample_mask=mask, action_mask=heads.action_mask)
        self._entropy_outputs = out
        joint = (out["discrete_entropy"] + out["continuous_entropy"]).detach()
        # TorchRL logs this tensor's mean as "entropy": the joint entropy, per sample.
        return joint.expand(adv_shape).unsqueeze(-1)

    def _weighted_loss_entropy(self, entropy: Tensor) -> Tensor:
        out = self._entropy_outputs
        loss = out["total"] + self.entropy_regularizer.controller_loss(out)
        # Reduced by TorchRL's (masked) mean over the batch: every element the same value.
        return loss.expand(entropy.shape)

    def update_controllers(self) -> None:
        """One step of the regularizer's target-entropy controllers from the last forward's
        entropies; call it after each optimizer step (no-op without controllers)."""
        if self._entropy_outputs is not None:
            self.entropy_regularizer.update_controllers(self._entropy_outputs)


class ClipPPOLoss(RegularizedPPOLoss, torchrl.objectives.ClipPPOLoss):
    """TorchRL's ``ClipPPOLoss`` with the regularizer's ``total`` as ``loss_entropy``
    (:class:`RegularizedPPOLoss` says how).

    Example::

        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.modules import ProbabilisticActor, ValueOperator
        >>> actor = ProbabilisticActor(TensorDictModule(torch.nn.Linear(5, 4), ["observation"], ["logits"]),
        ...                            in_keys=["logits"], distribution_class=torch.distributions.Categorical,
        ...                            return_log_prob=True)
        >>> critic = ValueOperator(torch.nn.Linear(5, 1), in_keys=["observation"])
        >>> batch = actor(TensorDict({"observation": torch.randn(32, 5)}, [32])).detach()
        >>> batch["advantage"], batch["value_target"] = torch.randn(32, 1), torch.randn(32, 1)
        >>> loss = ClipPPOLoss(actor, critic, entropy_regularization="long")
        >>> out = loss(batch)
        >>> (out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]).backward()
        >>> out["entropy_regularization", "discrete_entropy"].shape
        torch.Size([])
    """


class PPOLoss(RegularizedPPOLoss, torchrl.objectives.PPOLoss):
    """TorchRL's ``PPOLoss`` with the regularizer's ``total`` as ``loss_entropy``."""


class KLPENPPOLoss(RegularizedPPOLoss, torchrl.objectives.KLPENPPOLoss):
    """TorchRL's ``KLPENPPOLoss`` with the regularizer's ``total`` as ``loss_entropy``."""
