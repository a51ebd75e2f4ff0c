"""``HybridEntropyRegularizer``: schedule + weights + penalties in one module.

Beside them, all optional and all off by default (a config with only the core keys,
called with an explicit ``episode``, computes schedule + weights + penalties alone):

- an episode counter buffer (``step()``; ``forward`` uses it when ``episode`` is
  omitted; saved and restored by ``state_dict``),
- a user schedule instead of the config's,
- a :class:`~hybrid_entropy_ext.TargetEntropyController` per head,
- batch means over every rank of a ``torch.distributed`` process group.
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .config import EntropyRegularizationConfig
from .controller import TargetEntropyController
from .functional import hybrid_entropy_loss
from .reference import loss_from_entropies
from .schedule import (
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    LinearEntropySchedule,
    PiecewiseEntropySchedule,
    _check_coefficient,
    _check_episode_count,
    _describe,
)

__all__ = ["HybridEntropyRegularizer"]

_BUILTIN_SCHEDULES = (
    LinearEntropySchedule,
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    PiecewiseEntropySchedule,
)


def _resolve_config(
    config: Union[None, EntropyRegularizationConfig, Mapping[str, Any]], overrides: Dict[str, Any]
) -> EntropyRegularizationConfig:
    if config is None:
        resolved = EntropyRegularizationConfig()
    elif isinstance(config, EntropyRegularizationConfig):
        resolved = config
    elif isinstance(config, Mapping):
        resolved = EntropyRegularizationConfig.from_dict(config)
    else:
        raise TypeError(
            "HybridEntropyRegularizer: config must be an EntropyRegularizationConfig, a mapping "
            f"of its YAML keys, or None; got {type(config).__name__}"
        )
    return resolved.replace(**overrides) if overrides else resolved


class _CallableSchedule(nn.Module):
    """A plain Python callable ``episode -> coefficient`` as a schedule module (eager only).

    TorchScript cannot compile an arbitrary callable: a scripted regularizer holding
    one raises when called. Give an ``nn.Module`` with ``forward(episode: int) -> float``
    to script it.
    """

    def __init__(self, function: Callable[[int], float]) -> None:
        super().__init__()
        self.function = function

    @torch.jit.unused
    def forward(self, episode: int) -> float:
        return self.function(episode)

    def extra_repr(self) -> str:
        return repr(self.function)


def _as_schedule(schedule: Any) -> nn.Module:
    if isinstance(schedule, nn.Module):
        return schedule
    if callable(schedule):
        return _CallableSchedule(schedule)
    raise TypeError(
        "schedule: expected an nn.Module or a callable mapping an episode (int) to a coefficient, "
        f"got {_describe(schedule)}"
    )


@torch.library.custom_op("hybrid_entropy_ext::_all_reduce_sum", mutates_args=())
def _all_reduce_sum(tensor: Tensor, group_name: str) -> Tensor:
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


@_all_reduce_sum.register_fake
def _(tensor: Tensor, group_name: str) -> Tensor:
    return torch.empty_like(tensor)


def _all_reduce_sum_setup_context(ctx: Any, inputs: Any, output: Tensor) -> None:
    ctx.group_name = inputs[1]


def _all_reduce_sum_backward(ctx: Any, grad: Tensor):
    # Each rank's input enters every rank's loss through the sum: its gradient is the sum
    # of every rank's gradient of the result.
    return _all_reduce_sum(grad, ctx.group_name), None


_all_reduce_sum.register_autograd(_all_reduce_sum_backward, setup_context=_all_reduce_sum_setup_context)


def _group_name(group: Any) -> str:
    """The name of ``group`` (None: the default group), as collectives' ops take it."""
    if group is None:
        from torch.distributed.distributed_c10d import _get_default_group

        group = _get_default_group()
    return group.group_name


def _check_controller(name: str, controller: Any) -> None:
    if controller is not None and not isinstance(controller, TargetEntropyController):
        raise TypeError(f"{name}: expected a TargetEntropyController or None, got {_describe(controller)}")


class HybridEntropyRegularizer(nn.Module):
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
    ``decay_episodes`` is in the same unit. An explicit ``episode`` works as
    before and leaves the counter alone. With the counter on a GPU (or under
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
            under ``torch.compile``; for TorchScript give a scriptable module.
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
    # 2: the episode counter buffer; a version-1 state_dict (none) loads with the counter at 0.
    _version = 2

    discrete_entropy_weight: float
    continuous_entropy_weight: float
    min_entropy_threshold: Optional[float]
    continuous_min_entropy_threshold: Optional[float]
    penalty_multiplier: float
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
            raise TypeError(f"distributed: expected a bool, got {_describe(distributed)}")
        _check_controller("discrete_controller", discrete_controller)
        _check_controller("continuous_controller", continuous_controller)
        user_schedule = _as_schedule(schedule) if schedule is not None else None
        self.check_finite = check_finite
        self.config = _resolve_config(config, overrides)
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
        self.distributed = distributed or process_group is not None
        self.process_group = process_group
        self.register_buffer("episode_counter", torch.zeros((), dtype=torch.int64))

    # --- the schedule's position ----------------------------------------------------------

    @torch.jit.export
    def step(self, episodes: int = 1) -> None:
        """Advance the episode counter by ``episodes`` (an int >= 0; NumPy ints too).

        In place on the counter's device: no host sync.

        Raises:
            TypeError: ``episodes`` is not an integer (eager).
            ValueError: ``episodes`` is negative.
        """
        if not torch.jit.is_scripting():
            episodes = _check_episode_count("episodes", episodes)
        if episodes < 0:
            raise ValueError("episodes: expected an integer number of episodes >= 0, got " + str(episodes))
        self.episode_counter.add_(episodes)

    @torch.jit.export
    def compute_adaptive_entropy_coefficient(self, episode: int) -> float:
        """The scheduled entropy coefficient (dimensionless) at ``episode`` (int >= 0)."""
        value = self.schedule(episode)
        if not torch.jit.is_scripting():
            # A schedule from elsewhere may return anything: checked before it reaches the op.
            if not isinstance(self.schedule, _BUILTIN_SCHEDULES):
                value = _check_coefficient("schedule(" + str(episode) + ")", value)
        return value

    def _counter_read_on_host(self) -> bool:
        # On the CPU an int read of the counter is cheap and exact; elsewhere it would be a
        # device sync, and under torch.compile a graph break: there the tensor form is used.
        if self.episode_counter.device.type != "cpu":
            return False
        if not torch.jit.is_scripting():
            if torch.compiler.is_compiling():
                return False
        return True

    def _scheduled_from_counter(self) -> Tensor:
        if hasattr(self.schedule, "coefficient_tensor"):
            return self.schedule.coefficient_tensor(self.episode_counter)
        return torch.full_like(
            self.episode_counter, self.compute_adaptive_entropy_coefficient(int(self.episode_counter)),
            dtype=torch.float64,
        )

    # --- forward ----------------------------------------------------------------------------

    def forward(
        self, logits: Optional[Tensor], log_std: Optional[Tensor], episode: Optional[int] = None
    ) -> Dict[str, Tensor]:
        """Loss components at ``episode``, or at the episode counter when it is omitted.

        Args:
            logits: ``[B, K]`` discrete-head logits, or ``None``.
            log_std: ``[B, D]`` or ``[D]`` Gaussian log-std, or ``None``.
            episode: the training episode (int >= 0) that sets the scheduled
                coefficient; ``None`` (the default): the ``episode_counter`` buffer.

        Returns:
            The seven 0-dim tensors of :func:`hybrid_entropy_loss` plus
            ``current_entropy_coeff`` (the schedule's coefficient). Add
            ``out["total"]`` to the policy loss. With a controller, also
            ``discrete_entropy_coeff`` and ``continuous_entropy_coeff``: the
            coefficient each head got (a controlled head's from its controller, even
            while ``only_below_target`` keeps its term at 0).

        With ``distributed``, every rank must call it with the same heads present;
        the fused op computes each rank's batch means (penalties off), their sums
        and row counts are all-reduced with a differentiable all-reduce, and the
        seven components are computed from the global means, so every rank returns
        the same values (those of one process on the concatenated batch) and
        applies the same penalty. The all-reduce's backward sums the ranks'
        gradients, so each rank's gradient is the world size times its share of
        the global-batch gradient: averaged over ranks, as DistributedDataParallel
        averages, it is the single-process gradient. A shared ``[D]`` log_std has
        one entropy for every sample; it counts as the rank's batch size (the rows
        of ``logits``, or 1 without them), so its global mean is the
        sample-weighted mean over ranks, the same value on every rank while DDP
        keeps the parameter in sync. Every rank needs at least one row. Eager (and
        ``torch.compile``) only: a scripted regularizer raises with ``distributed``.

        Raises:
            ValueError: with ``check_finite=True``, ``logits`` holds NaN or ``+inf``,
                or ``log_std`` holds NaN or ``+/-inf`` (the message names the input).
            RuntimeError: ``distributed`` without an initialized process group.
        """
        if self.check_finite:
            self._check_inputs_finite(logits, log_std)
        # The scheduled coefficient: a float (explicit episode, or the counter read on the
        # host), or a 0-dim float64 tensor on the counter's device.
        scheduled_value = 0.0
        scheduled_tensor: Optional[Tensor] = None
        if episode is None:
            if self._counter_read_on_host():
                scheduled_value = self.compute_adaptive_entropy_coefficient(int(self.episode_counter))
            else:
                scheduled_tensor = self._scheduled_from_counter()
        else:
            scheduled_value = self.compute_adaptive_entropy_coefficient(episode)

        # A controlled head's coefficient: its controller's (a float32 tensor on its device).
        discrete_coeff: Optional[Tensor] = None
        continuous_coeff: Optional[Tensor] = None
        discrete_controller = self.discrete_controller
        continuous_controller = self.continuous_controller
        if discrete_controller is not None:
            discrete_coeff = discrete_controller.coefficient()
        if continuous_controller is not None:
            continuous_coeff = continuous_controller.coefficient()
        controlled = discrete_coeff is not None or continuous_coeff is not None
        if controlled:
            # One float64 [2] coefficient for the op (a float32 is exact in float64), the
            # schedule's for a head without a controller.
            like = discrete_coeff if discrete_coeff is not None else continuous_coeff
            assert like is not None
            coeff = torch.stack(
                [
                    self._head_coefficient(discrete_coeff, like, torch.float64, scheduled_value, scheduled_tensor),
                    self._head_coefficient(continuous_coeff, like, torch.float64, scheduled_value, scheduled_tensor),
                ]
            )
        elif scheduled_tensor is not None:
            coeff = scheduled_tensor
        else:
            # What hybrid_entropy_loss makes of a Python float coefficient.
            coeff = torch.scalar_tensor(scheduled_value, dtype=torch.float64)

        if self.distributed:
            out = self._global_loss(logits, log_std, coeff)
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
            )
        self._apply_only_below_target(out)
        total = out["total"]
        dtype = total.dtype
        out["current_entropy_coeff"] = self._scheduled_like(total, dtype, scheduled_value, scheduled_tensor)
        if controlled:
            out["discrete_entropy_coeff"] = self._head_coefficient(
                discrete_coeff, total, dtype, scheduled_value, scheduled_tensor
            )
            out["continuous_entropy_coeff"] = self._head_coefficient(
                continuous_coeff, total, dtype, scheduled_value, scheduled_tensor
            )
        return out

    def _scheduled_like(self, like: Tensor, dtype: torch.dtype, value: float, tensor: Optional[Tensor]) -> Tensor:
        # The scheduled coefficient in `dtype`: a fill on `like`'s device rather than a
        # host-to-device copy, which would sync.
        if tensor is not None:
            return tensor.to(dtype)
        return torch.full_like(like, value, dtype=dtype)

    def _head_coefficient(
        self, controlled: Optional[Tensor], like: Tensor, dtype: torch.dtype, value: float, tensor: Optional[Tensor]
    ) -> Tensor:
        # A head's coefficient in `dtype`: its controller's if it has one, else the schedule's.
        if controlled is not None:
            return controlled.to(dtype)
        return self._scheduled_like(like, dtype, value, tensor)

    def _apply_only_below_target(self, out: Dict[str, Tensor]) -> None:
        # An adaptive controller with only_below_target gates its head's entropy term: the
        # op's component (exact gradient) while the entropy is below the target, 0 above;
        # total follows. Heads whose controller does not gate (or without one) are left alone.
        discrete_controller = self.discrete_controller
        continuous_controller = self.continuous_controller
        # (Nested ifs: TorchScript compiles the right side of an `and` even where the
        # controller is None.)
        gated = False
        if discrete_controller is not None:
            if discrete_controller.gates_term:
                active = discrete_controller.term_active(out["discrete_entropy"])
                out["discrete"] = torch.where(active, out["discrete"], torch.zeros_like(out["discrete"]))
                gated = True
        if continuous_controller is not None:
            if continuous_controller.gates_term:
                active = continuous_controller.term_active(out["continuous_entropy"])
                out["continuous"] = torch.where(active, out["continuous"], torch.zeros_like(out["continuous"]))
                gated = True
        if gated:
            out["total"] = out["discrete"] + out["continuous"] + out["discrete_penalty"] + out["continuous_penalty"]

    # --- controllers -------------------------------------------------------------------------

    @torch.jit.export
    def update_controllers(self, out: Dict[str, Tensor]) -> None:
        """One control step of each controller from ``forward``'s output (on the device).

        ``adaptive``: moves the coefficient by ``delta`` towards the target; ``sac``:
        keeps ``log_coeff`` within its bounds (call after the optimizer's step). No-op
        without controllers. With ``distributed`` the entropies are the global ones, so
        every rank's controller moves alike.
        """
        discrete_controller = self.discrete_controller
        continuous_controller = self.continuous_controller
        if discrete_controller is not None:
            discrete_controller.update(out["discrete_entropy"])
        if continuous_controller is not None:
            continuous_controller.update(out["continuous_entropy"])

    @torch.jit.export
    def controller_loss(self, out: Dict[str, Tensor]) -> Tensor:
        """The ``sac`` controllers' temperature losses, summed (0 without any): add it to the
        loss whose optimizer holds this module's parameters (``log_coeff``). Its gradient
        reaches only ``log_coeff``: the entropies are detached."""
        total = torch.zeros_like(out["total"].detach())
        discrete_controller = self.discrete_controller
        continuous_controller = self.continuous_controller
        if discrete_controller is not None:
            total = total + discrete_controller.loss(out["discrete_entropy"])
        if continuous_controller is not None:
            total = total + continuous_controller.loss(out["continuous_entropy"])
        return total

    # --- across ranks ------------------------------------------------------------------------

    @torch.jit.unused
    def _global_loss(self, logits: Optional[Tensor], log_std: Optional[Tensor], coeff: Tensor) -> Dict[str, Tensor]:
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
        reduced = _all_reduce_sum(stats, _group_name(self.process_group))
        dtype = local["total"].dtype
        global_d = (reduced[0] / reduced[2]).to(dtype) if logits is not None else torch.zeros_like(h_d)
        global_c = (reduced[1] / reduced[3]).to(dtype) if log_std is not None else torch.zeros_like(h_c)
        return loss_from_entropies(
            global_d,
            global_c,
            coeff,
            self.discrete_entropy_weight,
            self.continuous_entropy_weight,
            self.min_entropy_threshold,
            self.continuous_min_entropy_threshold,
            self.penalty_multiplier,
            has_discrete=logits is not None,
            has_continuous=log_std is not None,
        )

    # --- checkpoints -------------------------------------------------------------------------

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # A whole module pickled at state-dict version 1 (torch.save(model)) has none of
        # the controller, distributed and counter attributes: they get the values that
        # switch them off (no controllers, not distributed, the counter at 0).
        super().__setstate__(state)
        modules = self.__dict__["_modules"]
        for name in ("discrete_controller", "continuous_controller"):
            if name not in modules and name not in self.__dict__:
                self.__dict__[name] = None  # where nn.Module keeps a submodule attribute set to None
        buffers = self.__dict__["_buffers"]
        if "episode_counter" not in buffers:
            buffers["episode_counter"] = torch.zeros((), dtype=torch.int64)
        defaults = {
            "distributed": False,
            "process_group": None,
            "check_finite": False,
        }
        for name, value in defaults.items():
            if name not in self.__dict__:
                self.__dict__[name] = value

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A version-1 state_dict has no counter (its module was always given the
        # episode): it loads with the counter at 0.
        version = local_metadata.get("version", None)
        key = prefix + "episode_counter"
        if (version is None or version < 2) and key not in state_dict:
            state_dict[key] = torch.zeros((), dtype=torch.int64)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _check_inputs_finite(self, logits: Optional[Tensor], log_std: Optional[Tensor]) -> None:
        # One reduction per present input, stacked so that reading the verdicts is a
        # single host sync. -inf logits are masked actions, hence `< +inf` (False for
        # NaN and +inf) rather than isfinite for them.
        names: List[str] = []
        verdicts: List[Tensor] = []
        if logits is not None:
            names.append("logits")
            verdicts.append(torch.lt(logits, float("inf")).all())
        if log_std is not None:
            names.append("log_std")
            verdicts.append(torch.isfinite(log_std).all())
        if len(verdicts) == 0:
            return  # both heads None: the op itself reports that
        ok: List[bool] = torch.stack(verdicts).tolist()
        for i in range(len(names)):
            if not ok[i]:
                if names[i] == "logits":
                    found, expected = "NaN or +inf", "finite values or -inf (masked actions)"
                else:
                    found, expected = "NaN or +/-inf", "finite values"
                raise ValueError(
                    "HybridEntropyRegularizer(check_finite=True): " + names[i] + " contains "
                    + found + " values; expected " + expected
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
        if self.distributed:
            text += ", distributed=True"
        return text
