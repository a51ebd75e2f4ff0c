"""``HybridEntropyRegularizer``: the ``nn.Module`` that ties the regularization together.

Its parts: the coefficient (``coefficient.py``: the schedule and the episode counter;
``controlled_heads.py``: the target-entropy controllers), the loss (the fused op, or over
the ranks of a process group ``distributed.py``), the optional finiteness check
(``finite_inputs.py``) and the loading of version-1 checkpoints (``checkpoint.py``).
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .._validation import describe
from ..ops.loss import hybrid_entropy_loss
from .checkpoint import COUNTER, add_missing_counter, fill_missing_state
from .coefficient import (
    CallableSchedule,
    ScheduledCoefficientMixin,
    add_coefficient_outputs,
    as_schedule,
    op_coefficient,
)
from .config import EntropyRegularizationConfig, as_config
from .controlled_heads import ControllersMixin, check_controller
from .controller import TargetEntropyController
from .distributed import global_loss
from .finite_inputs import check_inputs_finite

__all__ = ["HybridEntropyRegularizer"]

# The name a whole-module pickle of a regularizer holding a callable schedule gives its
# class (hybrid_entropy_ext.regularizer._CallableSchedule, the flat path __init__ keeps).
_CallableSchedule = CallableSchedule


class HybridEntropyRegularizer(ScheduledCoefficientMixin, ControllersMixin, nn.Module):
    """Adaptive entropy regularization for a policy with discrete and continuous heads.

    Holds the coefficient schedule (linear decay by default, or the config's
    ``entropy_schedule``, or constant when ``enable_adaptive_entropy`` is false),
    the per-head weights, the collapse penalties of an
    :class:`EntropyRegularizationConfig` and, optionally, a target-entropy
    controller per head, and computes the loss with the fused op.
    ``torch.jit.script``-able; the scripted module runs in C++ programs too,
    backward included.

    **The episode counter.** The regularizer keeps its schedule's position in a
    0-dim int64 buffer, ``episode_counter`` (in ``state_dict``, so a checkpoint
    restores the coefficient exactly). :meth:`step` advances it; ``forward``
    uses it when ``episode`` is omitted. It counts whatever the trainer counts:
    episodes, PPO updates or environment steps (Stable-Baselines3's ``train()``
    sees no episodes; step once per update there), as long as the schedule's
    ``decay_episodes`` is in the same unit. An explicit ``episode`` sets the
    coefficient instead and leaves the counter alone. With the counter on a GPU (or under
    ``torch.compile``) the coefficient is computed from it with tensor
    operations, so ``forward`` makes no host sync; on the CPU it is read as an
    int (no sync there).

    Args:
        config: an :class:`EntropyRegularizationConfig`, a mapping of its YAML
            keys (the section alone or a whole trainer config), or ``None`` for
            the defaults.
        check_finite: ``True``: ``forward`` first checks its inputs and raises a
            ``ValueError`` naming ``logits`` or ``log_std`` when one holds NaN or
            infinite values, instead of returning NaN outputs. ``-inf`` logits stay
            allowed (they mark impossible actions). Costs one reduction per input and
            one host sync per call (a device sync on GPU, a graph break under
            ``torch.compile``); off by default.
        schedule: replaces the config's schedule: any ``nn.Module`` or callable
            mapping an episode (int >= 0) to a coefficient (a number >= 0). A module
            with a ``coefficient_tensor(episode: Tensor) -> Tensor`` method (every
            schedule of this package has one) is evaluated on the counter's device;
            one without is called with the counter read as an int (a device sync
            when the counter is on a GPU). A plain callable works in eager code and
            under ``torch.compile``; for TorchScript give a scriptable module. Its value
            is checked, a ``ValueError`` if it is not a finite number >= 0, in eager code
            and scripted; compiled, by ``torch._check`` in the graph (a negative one
            raises a ``RuntimeError``, inside torch.compile's own error with
            ``fullgraph``); ``coefficient_tensor``'s is not checked (reading it would
            sync the device).
        discrete_controller, continuous_controller: a
            :class:`TargetEntropyController` for that head, replacing the one the
            config describes (``target_entropy_control``), or ``None``. A controlled
            head takes its coefficient from the controller; the other keeps the
            schedule's, and both go to the fused op as one ``[2]`` coefficient.
        distributed: ``True``: the batch means (and so every output, the collapse
            check included) are taken over the whole global batch of the default
            ``torch.distributed`` process group (see :meth:`forward`).
        process_group: the process group to reduce over (implies ``distributed``).
        **overrides: YAML keys that replace the config's values, validated the
            same way (e.g. ``penalty_multiplier=5.0``).

    Example::

        >>> reg = HybridEntropyRegularizer(EntropyRegularizationConfig.preset("short"))
        >>> logits, log_std = torch.randn(64, 5), torch.zeros(64, 3)
        >>> out = reg(logits, log_std, episode=10)
        >>> loss = policy_loss + out["total"]            # doctest: +SKIP
        >>> round(float(out["current_entropy_coeff"]), 6)  # 0.05 -> 0.01 over 200 episodes
        0.048
        >>> reg.step(10); round(float(reg(logits, log_std)["current_entropy_coeff"]), 6)  # the counter
        0.048
    """

    __jit_ignored_attributes__ = ["config", "process_group"]
    # State-dict version 2 holds the episode counter; version 1 loads with it at 0 (checkpoint.py).
    _version = 2

    discrete_entropy_weight: float
    continuous_entropy_weight: float
    min_entropy_threshold: Optional[float]
    continuous_min_entropy_threshold: Optional[float]
    penalty_multiplier: float
    loss_agg_mode: str
    loss_scale_factor: Optional[float]
    discrete_sizes: Optional[List[int]]
    discrete_head_thresholds: Optional[List[float]]
    normalize_discrete_entropy: bool
    parameterized_actions: bool
    check_finite: bool
    distributed: bool

    def __init__(
        self,
        config: Union[None, EntropyRegularizationConfig, Mapping[str, Any]] = None,
        check_finite: bool = False,
        schedule: Union[None, nn.Module, Callable[[int], float]] = None,
        discrete_controller: Optional[TargetEntropyController] = None,
        continuous_controller: Optional[TargetEntropyController] = None,
        distributed: bool = False,
        process_group: Optional[Any] = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if not isinstance(check_finite, bool):
            raise TypeError(
                "HybridEntropyRegularizer: check_finite must be a bool, got "
                f"{check_finite!r} ({type(check_finite).__name__})"
            )
        if not isinstance(distributed, bool):
            raise TypeError(f"distributed: expected a bool, got {describe(distributed)}")
        check_controller("discrete_controller", discrete_controller)
        check_controller("continuous_controller", continuous_controller)
        user_schedule = as_schedule(schedule) if schedule is not None else None
        self.check_finite = check_finite
        self.config = as_config(config, overrides)
        # What follows from the schedule and the controllers (whether the schedule's output is
        # checked, whether a head's term is gated) is derived where it is used, from the
        # submodules of the moment, so that reassigning one (reg.schedule = ...) is honored.
        self.schedule = user_schedule if user_schedule is not None else self.config.make_schedule()
        config_discrete, config_continuous = self.config.make_controllers()
        self.discrete_controller = discrete_controller if discrete_controller is not None else config_discrete
        self.continuous_controller = (
            continuous_controller if continuous_controller is not None else config_continuous
        )
        self.discrete_entropy_weight = self.config.discrete_entropy_weight
        self.continuous_entropy_weight = self.config.continuous_entropy_weight
        self.min_entropy_threshold = self.config.min_entropy_threshold
        self.continuous_min_entropy_threshold = self.config.resolved_continuous_min_entropy_threshold
        self.penalty_multiplier = self.config.penalty_multiplier
        self.loss_agg_mode = self.config.loss_agg_mode
        self.loss_scale_factor = self.config.loss_scale_factor
        sizes, head_thresholds = self.config.discrete_sizes, self.config.discrete_head_thresholds
        self.discrete_sizes = list(sizes) if sizes is not None else None
        self.discrete_head_thresholds = list(head_thresholds) if head_thresholds is not None else None
        self.normalize_discrete_entropy = self.config.normalize_discrete_entropy
        self.parameterized_actions = self.config.parameterized_actions
        self.distributed = distributed or process_group is not None
        self.process_group = process_group
        self.register_buffer(COUNTER, torch.zeros((), dtype=torch.int64))

    def forward(
        self,
        logits: Optional[Tensor],
        log_std: Optional[Tensor],
        episode: Optional[int] = None,
        sample_mask: Optional[Tensor] = None,
        action_mask: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """Loss components at ``episode``, or at the episode counter when it is omitted.

        Args:
            logits: ``[..., K]`` discrete-head logits (``[B, K]``, or ``[B, T, K]`` for
                sequences), or ``None``.
            log_std: ``[..., D]`` Gaussian log-std with the leading dims of ``logits``, or
                ``[D]`` shared, or ``None``; with the config's ``parameterized_actions``,
                ``[..., K, P]`` (each discrete action's own parameters) or ``[K, P]``.
            episode: the training episode (int >= 0) that sets the scheduled
                coefficient; ``None`` (the default): the ``episode_counter`` buffer.
            sample_mask: bool or floating weights of the rows, of the leading shape
                (``[B]``, ``[B, T]``), or ``None``. The config's ``loss_agg_mode`` and
                ``loss_scale_factor`` say how the rows are aggregated
                (:func:`hybrid_entropy_loss`).
            action_mask: bool, the shape of ``logits``: ``False`` rules an action out
                (a ``-inf`` logit: probability 0, gradient 0), or ``None``.

        Example::

            >>> reg = HybridEntropyRegularizer(loss_agg_mode="seq-mean-token-mean")
            >>> logits, log_std = torch.randn(4, 16, 6), torch.zeros(4, 16, 2)  # [B, T, ...]
            >>> mask = torch.arange(16) < torch.tensor([[16], [9], [3], [12]])
            >>> out = reg(logits, log_std, 0, mask)

        Returns:
            The seven 0-dim tensors of :func:`hybrid_entropy_loss` (and with the config's
            ``discrete_sizes``, ``discrete_entropy_per_head`` ``[H]``) plus
            ``current_entropy_coeff`` (the schedule's coefficient). Add
            ``out["total"]`` to the policy loss. With a controller, also
            ``discrete_entropy_coeff`` and ``continuous_entropy_coeff``: the
            coefficient each head got (a controlled head's from its controller, even
            while ``only_below_target`` keeps its term at 0).

        With ``distributed``, every rank must call it with the same heads present; the
        outputs are those of one process on the concatenated global batch, the same on
        every rank (:func:`~hybrid_entropy_ext.regularization.distributed.global_loss` says
        how, and what a rank's gradient is). Eager and ``torch.compile`` only: a scripted
        regularizer raises with ``distributed``.

        Raises:
            ValueError: with ``check_finite=True``, ``logits`` holds NaN or ``+inf`` at
                an action ``action_mask`` allows, or ``log_std`` holds NaN or ``+/-inf``
                (the message names the input).
            RuntimeError: ``distributed`` without an initialized process group.
        """
        if self.check_finite:
            check_inputs_finite(logits, log_std, action_mask)
        scheduled_value, scheduled_tensor = self._scheduled_coefficient(episode)
        discrete_coeff, continuous_coeff = self._controller_coefficients()
        coeff = op_coefficient(discrete_coeff, continuous_coeff, scheduled_value, scheduled_tensor)
        if self.distributed:
            out = self._global_loss(logits, log_std, coeff, sample_mask, action_mask)
        else:
            out = hybrid_entropy_loss(
                logits,
                log_std,
                coeff,
                self.discrete_entropy_weight,
                self.continuous_entropy_weight,
                self.min_entropy_threshold,
                self.continuous_min_entropy_threshold,
                self.penalty_multiplier,
                sample_mask,
                self.loss_agg_mode,
                self.loss_scale_factor,
                action_mask,
                self.discrete_sizes,
                parameterized_actions=self.parameterized_actions,
                normalize_discrete_entropy=self.normalize_discrete_entropy,
                discrete_head_thresholds=self.discrete_head_thresholds,
            )
        self._apply_only_below_target(out)
        add_coefficient_outputs(out, discrete_coeff, continuous_coeff, scheduled_value, scheduled_tensor)
        return out

    @torch.jit.unused
    def _global_loss(
        self,
        logits: Optional[Tensor],
        log_std: Optional[Tensor],
        coeff: Tensor,
        sample_mask: Optional[Tensor],
        action_mask: Optional[Tensor],
    ) -> Dict[str, Tensor]:
        return global_loss(
            logits,
            log_std,
            coeff,
            self.discrete_entropy_weight,
            self.continuous_entropy_weight,
            self.min_entropy_threshold,
            self.continuous_min_entropy_threshold,
            self.penalty_multiplier,
            self.process_group,
            sample_mask,
            self.loss_agg_mode,
            self.loss_scale_factor,
            action_mask,
            self.discrete_sizes,
            parameterized_actions=self.parameterized_actions,
            normalize_discrete_entropy=self.normalize_discrete_entropy,
            discrete_head_thresholds=self.discrete_head_thresholds,
        )

    # --- checkpoints: state-dict version 1 (checkpoint.py) ------------------------------------

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        fill_missing_state(self.__dict__)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        add_missing_counter(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        text = (
            f"discrete_entropy_weight={self.discrete_entropy_weight}, "
            f"continuous_entropy_weight={self.continuous_entropy_weight}, "
            f"min_entropy_threshold={self.min_entropy_threshold}, "
            f"continuous_min_entropy_threshold={self.continuous_min_entropy_threshold}, "
            f"penalty_multiplier={self.penalty_multiplier}, "
            f"check_finite={self.check_finite}"
        )
        if self.loss_agg_mode != "token-mean" or self.loss_scale_factor is not None:
            text += f", loss_agg_mode={self.loss_agg_mode!r}, loss_scale_factor={self.loss_scale_factor}"
        if self.discrete_sizes is not None:
            text += f", discrete_sizes={self.discrete_sizes}"
        if self.discrete_head_thresholds is not None:
            text += f", discrete_head_thresholds={self.discrete_head_thresholds}"
        if self.normalize_discrete_entropy:
            text += ", normalize_discrete_entropy=True"
        if self.parameterized_actions:
            text += ", parameterized_actions=True"
        if self.distributed:
            text += ", distributed=True"
        return text
