"""Where a regularizer's entropy coefficient comes from.

The schedule gives the coefficient at an episode: one given to ``forward``, or the
regularizer's episode counter (a 0-dim int64 buffer), read on the host where that is free
(the CPU) and evaluated with the schedule's tensor form elsewhere (a GPU, ``torch.compile``),
so that ``forward`` makes no host sync. A head with a target-entropy controller takes the
controller's coefficient instead, and the two heads' coefficients then go to the op as
one ``[2]`` tensor.

:class:`ScheduledCoefficientMixin` holds the schedule's methods of
:class:`~hybrid_entropy_ext.HybridEntropyRegularizer` (``controlled_heads.py`` the
controllers'); :func:`op_coefficient` and :func:`add_coefficient_outputs` are the
TorchScript code of its ``forward`` that joins the two.
"""

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validation import check_coefficient, check_episode_count, describe
from .schedule import (
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    LinearEntropySchedule,
    PiecewiseEntropySchedule,
)

__all__ = [
    "BUILTIN_SCHEDULES",
    "CallableSchedule",
    "as_schedule",
    "op_coefficient",
    "add_coefficient_outputs",
    "ScheduledCoefficientMixin",
]

#: The package's schedules: their output is checked when they are built, not per call.
BUILTIN_SCHEDULES = (
    LinearEntropySchedule,
    ConstantEntropySchedule,
    CosineEntropySchedule,
    ExponentialEntropySchedule,
    PiecewiseEntropySchedule,
)


class CallableSchedule(nn.Module):
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


def as_schedule(schedule: Any) -> nn.Module:
    """``schedule`` as a module: an ``nn.Module`` as it is, a callable wrapped in :class:`CallableSchedule`."""
    if isinstance(schedule, nn.Module):
        return schedule
    if callable(schedule):
        return CallableSchedule(schedule)
    raise TypeError(
        "schedule: expected an nn.Module or a callable mapping an episode (int) to a coefficient, "
        f"got {describe(schedule)}"
    )


def _scheduled_like(like: Tensor, dtype: torch.dtype, value: float, tensor: Optional[Tensor]) -> Tensor:
    # The scheduled coefficient in `dtype`: a fill on `like`'s device rather than a
    # host-to-device copy, which would sync.
    if tensor is not None:
        return tensor.to(dtype)
    return torch.full_like(like, value, dtype=dtype)


def _head_coefficient(
    controlled: Optional[Tensor], like: Tensor, dtype: torch.dtype, value: float, tensor: Optional[Tensor]
) -> Tensor:
    # A head's coefficient in `dtype`: its controller's if it has one, else the schedule's.
    if controlled is not None:
        return controlled.to(dtype)
    return _scheduled_like(like, dtype, value, tensor)


def op_coefficient(
    discrete: Optional[Tensor], continuous: Optional[Tensor], value: float, tensor: Optional[Tensor]
) -> Tensor:
    """The op's ``entropy_coeff``: the scheduled one (``value``, or ``tensor`` when it is not
    ``None``) as a 0-dim float64 tensor, or, when a head has a controller's coefficient
    (``discrete``, ``continuous``), one float64 ``[2]`` tensor (a float32 is exact in float64)
    with the scheduled one for a head without."""
    if discrete is not None or continuous is not None:
        like = discrete if discrete is not None else continuous
        assert like is not None
        return torch.stack(
            [
                _head_coefficient(discrete, like, torch.float64, value, tensor),
                _head_coefficient(continuous, like, torch.float64, value, tensor),
            ]
        )
    if tensor is not None:
        return tensor
    # What hybrid_entropy_loss makes of a Python float coefficient.
    return torch.scalar_tensor(value, dtype=torch.float64)


def add_coefficient_outputs(
    out: Dict[str, Tensor],
    discrete: Optional[Tensor],
    continuous: Optional[Tensor],
    value: float,
    tensor: Optional[Tensor],
) -> None:
    """Adds ``current_entropy_coeff`` (the schedule's) to ``out`` and, where a head has a
    controller, ``discrete_entropy_coeff`` and ``continuous_entropy_coeff`` (each head's),
    in the dtype and on the device of ``out["total"]``."""
    total = out["total"]
    dtype = total.dtype
    out["current_entropy_coeff"] = _scheduled_like(total, dtype, value, tensor)
    if discrete is not None or continuous is not None:
        out["discrete_entropy_coeff"] = _head_coefficient(discrete, total, dtype, value, tensor)
        out["continuous_entropy_coeff"] = _head_coefficient(continuous, total, dtype, value, tensor)


class ScheduledCoefficientMixin:
    """The schedule's methods of an ``nn.Module`` with the attributes ``schedule`` (a
    module) and ``episode_counter`` (a 0-dim int64 buffer)."""

    @torch.jit.export
    def step(self, episodes: int = 1) -> None:
        """Advance the episode counter by ``episodes`` (an int >= 0; NumPy ints too).

        In place on the counter's device: no host sync.

        Raises:
            TypeError: ``episodes`` is not an integer (eager).
            ValueError: ``episodes`` is negative.
        """
        if not torch.jit.is_scripting():
            episodes = check_episode_count("episodes", episodes)
        if episodes < 0:
            raise ValueError("episodes: expected an integer number of episodes >= 0, got " + str(episodes))
        self.episode_counter.add_(episodes)

    @torch.jit.unused
    def _traced_schedule_value(self, episode: int) -> float:
        # Traced by torch.compile, the episode may be symbolic (the counter's, or an
        # explicit one after a recompile), and so the value: checked in the graph, where
        # the eager check's str() and isfinite() cannot be traced. (Unused by TorchScript,
        # which parses no lambda.)
        value = self.schedule(episode)
        torch._check(value >= 0.0, lambda: "schedule: expected a finite number >= 0")
        return value

    @torch.jit.export
    def compute_adaptive_entropy_coefficient(self, episode: int) -> float:
        """The scheduled entropy coefficient (dimensionless) at ``episode`` (int >= 0)."""
        if not torch.jit.is_scripting():
            if not isinstance(self.schedule, BUILTIN_SCHEDULES):
                # A schedule from elsewhere gets the episode the built-in ones check, and
                # may return anything: checked before it reaches the op.
                if torch.compiler.is_compiling():
                    return self._traced_schedule_value(episode)
                episode = check_episode_count("episode", episode)
                return check_coefficient("schedule(" + str(episode) + ")", self.schedule(episode))
            return self.schedule(episode)
        # Scripted, a schedule is typed to return a float, but any float: checked as in
        # eager, so that a negative one cannot turn the bonus into a penalty unseen.
        value = self.schedule(episode)
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(
                "schedule(" + str(episode) + "): expected a finite number >= 0, got " + str(value)
            )
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

    def _scheduled_coefficient(self, episode: Optional[int]) -> Tuple[float, Optional[Tensor]]:
        # The scheduled coefficient at `episode`, or at the counter when it is None: a float
        # (explicit episode, or the counter read on the host) and None, or 0.0 and a 0-dim
        # float64 tensor on the counter's device.
        if episode is not None:
            return self.compute_adaptive_entropy_coefficient(episode), None
        if self._counter_read_on_host():
            return self.compute_adaptive_entropy_coefficient(int(self.episode_counter)), None
        return 0.0, self._scheduled_from_counter()
