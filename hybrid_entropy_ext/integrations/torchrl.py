"""TorchRL's PPO losses with the entropy regularizer as their entropy term.

:class:`ClipPPOLoss`, :class:`PPOLoss` and :class:`KLPENPPOLoss` are TorchRL's, with one
more keyword, ``entropy_regularization``. Their ``loss_entropy`` is the
:class:`~hybrid_entropy_ext.HybridEntropyRegularizer`'s ``total``, computed in the fused op
from the policy's distribution (a ``Categorical``, TorchRL's ``MaskedCategorical`` or
``OneHotCategorical``, a diagonal Gaussian, or a composite distribution of categorical
heads, a multi-discrete head's sub-heads with one penalty each, and at most one
Gaussian head); everything else is TorchRL's. Every output of the
regularizer is in the output TensorDict under ``"entropy_regularization"`` (detached:
``loss_entropy`` carries the gradient), ``"entropy"`` is ``H_d + H_c``, and the loss masks
in the input (TorchRL's ``loss_mask_key``; with ``"auto"``, every key it reads, combined and
broadcast over the advantage's dims as TorchRL's reduction does) are the regularizer's sample
mask; a mask that keeps nothing gives TorchRL's 0 loss with finite gradients.

The schedule's position is the regularizer's ``episode_counter``
(``loss.entropy_regularizer.step(episodes)`` in the training loop); after each optimizer
step, :meth:`RegularizedPPOLoss.update_controllers` steps an adaptive controller. This
module imports TorchRL (``pip install ".[torchrl]"``).
"""

from typing import Any, Dict, List, Optional

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
        self._loss_masks: List[Tensor] = []
        # 0-dim bool: whether the loss masks keep any element (None without masks).
        self._keeps_any: Optional[Tensor] = None

    def _input_loss_masks(self, tensordict: TensorDictBase) -> List[Tensor]:
        """The input's loss masks, each where TorchRL's reduction would read one (bool; all
        of them, which that reduction combines)."""
        masks = [tensordict.get(key, default=None) for key in self._loss_mask_keys()]
        return [mask.bool() for mask in masks if mask is not None]

    @staticmethod
    def _rows_mask(masks: List[Tensor], adv_shape: torch.Size, num_rows: int) -> Tensor:
        """The loss masks as TorchRL's reduction applies them to the entropy term (of shape
        ``[*adv_shape, 1]``): trailing singleton dims dropped, then padded on the right and
        expanded, and combined (and); then as the heads' ``num_rows`` flattened rows."""
        loss_shape = tuple(adv_shape) + (1,)
        combined: Optional[Tensor] = None
        for mask in masks:
            while mask.dim() > len(loss_shape) and mask.shape[-1] == 1:
                mask = mask.squeeze(-1)
            if mask.dim() > len(loss_shape):
                raise ValueError(
                    f"a loss mask of shape {tuple(mask.shape)} cannot be applied to the entropy term of "
                    f"shape {loss_shape}: it has more non-singleton dims"
                )
            mask = mask.reshape(mask.shape + (1,) * (len(loss_shape) - mask.dim())).expand(loss_shape)
            combined = mask if combined is None else combined & mask
        assert combined is not None
        return combined.reshape(num_rows)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._loss_masks = self._input_loss_masks(tensordict)
        try:
            td_out = super().forward(tensordict)
        finally:
            self._loss_masks = []
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
        mask = None
        self._keeps_any = None
        rows = heads.logits if heads.logits is not None else heads.log_std
        if self._loss_masks and rows.dim() >= 2:
            # The heads come flattened to rows ([N, K], [N, D]): the mask's rows alike.
            mask = self._rows_mask(self._loss_masks, adv_shape, rows.shape[0])
            # TorchRL's masked mean of nothing is 0 (its count clamped to 1) with finite
            # gradients; the op's is NaN. Such a batch is weighed whole here, and its loss
            # zeroed by _weighted_loss_entropy: no host sync.
            self._keeps_any = mask.any()
            mask = mask | ~self._keeps_any
        out = regularizer(heads.logits, heads.log_std, sample_mask=mask, action_mask=heads.action_mask)
        self._entropy_outputs = out
        joint = (out["discrete_entropy"] + out["continuous_entropy"]).detach()
        # TorchRL logs this tensor's mean as "entropy": the joint entropy, per sample.
        return joint.expand(adv_shape).unsqueeze(-1)

    def _weighted_loss_entropy(self, entropy: Tensor) -> Tensor:
        out = self._entropy_outputs
        loss = out["total"] + self.entropy_regularizer.controller_loss(out)
        if self._keeps_any is not None:
            loss = torch.where(self._keeps_any, loss, torch.zeros_like(loss))
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
