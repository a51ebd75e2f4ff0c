"""Entropy-coefficient schedules.

A schedule maps a training episode (a count starting at 0: episodes, updates or
environment steps, whatever the trainer counts) to the entropy coefficient ``c``
(dimensionless) that multiplies the policy entropy in the loss. Every schedule
is an ``nn.Module`` so that a regularizer can hold one as a submodule and the
whole thing can be compiled with ``torch.jit.script``.

Each schedule has two forms of the same formula:

- ``forward(episode: int) -> float``: Python arithmetic on a host integer;
- ``coefficient_tensor(episode: Tensor) -> Tensor``: tensor arithmetic on an
  integer tensor (0-dim, any device), giving a 0-dim float64 tensor on that
  device. The regularizer uses it with its episode counter on a GPU (or under
  ``torch.compile``), where reading the counter on the host would be a device
  sync. Linear, constant and piecewise give bitwise the same value in both
  forms (the same IEEE operations in the same order); cosine and exponential
  call ``cos`` / ``pow``, whose library implementations may differ in the last
  bit.
"""

import math
import numbers
from typing import Any, List, Sequence

import torch
from torch import Tensor, nn

from .._validation import (
    check_coefficient,
    check_episode_count,
    check_points,
    check_positive_coefficient,
    describe,
    is_bool,
)

__all__ = [
    "LinearEntropySchedule",
    "ConstantEntropySchedule",
    "CosineEntropySchedule",
    "ExponentialEntropySchedule",
    "PiecewiseEntropySchedule",
]


def _check_episode_type(episode: Any) -> int:
    # Eager-only: TorchScript already enforces the ``int`` annotation, while in
    # Python a float or bool episode would otherwise be silently accepted. A NumPy
    # integer becomes an int, so that the arithmetic below stays Python's.
    if is_bool(episode) or not isinstance(episode, numbers.Integral):
        raise TypeError(f"episode: expected an integer >= 0, got {describe(episode)}")
    return int(episode)


def _check_episode(episode: int) -> None:
    # Compiled by TorchScript, hence string concatenation instead of an f-string.
    if episode < 0:
        raise ValueError("episode: expected an integer >= 0, got " + str(episode))


def _as_float64(episode: Tensor) -> Tensor:
    # Episode counts are integers < 2**53, exact in float64, so the tensor forms below
    # divide the same doubles as Python's int / int does.
    return episode.to(torch.float64)


class _DecaySchedule(nn.Module):
    """What the schedules from ``start`` to ``end`` over ``decay_episodes`` share: their
    checked hyper-parameters, their repr and both forms' scaffolding (the episode's
    checks, ``end`` from ``decay_episodes`` on, and always when it is 0). A subclass
    defines only its curve for ``0 <= episode < decay_episodes``, in both forms:
    ``_curve(episode: int) -> float`` and ``_curve_tensor(e: Tensor) -> Tensor``, ``e``
    being the episode as a 0-dim float64 tensor."""

    start: float
    end: float
    decay_episodes: int

    def __init__(self, start: float, end: float, decay_episodes: int) -> None:
        super().__init__()
        # Validate everything before assigning anything, so a bad call leaves no
        # half-built module behind.
        start_value = check_coefficient("start", start)
        end_value = check_coefficient("end", end)
        decay_value = check_episode_count("decay_episodes", decay_episodes)
        self.start = start_value
        self.end = end_value
        self.decay_episodes = decay_value

    def forward(self, episode: int) -> float:
        """Return the coefficient (dimensionless) for ``episode`` (an int >= 0).

        Raises:
            ValueError: ``episode`` is negative (in scripted code this surfaces as
                ``torch.jit.Error`` carrying the same message).
            TypeError: in eager mode, ``episode`` is not an integer.
        """
        if not torch.jit.is_scripting():
            episode = _check_episode_type(episode)
        _check_episode(episode)
        if episode >= self.decay_episodes:
            return self.end
        return self._curve(episode)

    @torch.jit.export
    def coefficient_tensor(self, episode: Tensor) -> Tensor:
        """``forward`` on a 0-dim integer tensor (>= 0): a 0-dim float64 tensor on its device.

        Tensor operations only (no host sync); for the linear schedule bitwise equal to
        ``forward(int(episode))`` (see the module docstring for the others).
        """
        e = _as_float64(episode)
        end = torch.full_like(e, self.end)
        if self.decay_episodes == 0:
            return end
        return torch.where(episode >= self.decay_episodes, end, self._curve_tensor(e))

    def _curve(self, episode: int) -> float:
        raise NotImplementedError

    def _curve_tensor(self, e: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"start={self.start!r}, end={self.end!r}, decay_episodes={self.decay_episodes!r}"


class LinearEntropySchedule(_DecaySchedule):
    """Linear decay of the entropy coefficient from ``start`` to ``end``.

    For an episode ``e >= 0`` and ``N = decay_episodes``::

        coeff(e) = start * (1 - e/N) + end * (e/N)   if e < N
        coeff(e) = end                                otherwise (always, when N == 0)

    Args:
        start: coefficient at episode 0 (dimensionless, finite, >= 0).
        end: coefficient from episode ``decay_episodes`` on (dimensionless, finite, >= 0).
            ``end > start`` is allowed and gives a linear increase.
        decay_episodes: length of the ramp, in episodes (int >= 0).

    Numbers may be Python or NumPy scalars (``np.float32(0.1)``, ``np.int64(500)``).

    Raises:
        TypeError: an argument is not a number (``bool`` is not a number;
            ``decay_episodes`` must be an integer).
        ValueError: an argument is negative or not finite.

    Example::

        >>> schedule = LinearEntropySchedule(0.1, 0.001, 500)
        >>> schedule(0), schedule(500)
        (0.1, 0.001)
        >>> round(schedule(250), 6)
        0.0505
        >>> schedule.coefficient_tensor(torch.tensor(250))   # same value, as a tensor
        tensor(0.0505, dtype=torch.float64)
        >>> scripted = torch.jit.script(schedule)  # same values, usable from C++
    """

    # forward(episode) and coefficient_tensor(episode) are _DecaySchedule's; the tensor
    # form is bitwise the host form (the same IEEE operations in the same order).

    def _curve(self, episode: int) -> float:
        fraction = episode / self.decay_episodes
        return self.start * (1.0 - fraction) + self.end * fraction

    def _curve_tensor(self, e: Tensor) -> Tensor:
        fraction = e / self.decay_episodes
        return self.start * (1.0 - fraction) + self.end * fraction


class ConstantEntropySchedule(nn.Module):
    """An entropy coefficient that does not change with the episode.

    Used when adaptive scheduling is disabled; it has the same call signature as
    :class:`LinearEntropySchedule` so the two are interchangeable.

    Args:
        value: the coefficient (dimensionless, finite, >= 0).

    Example::

        >>> ConstantEntropySchedule(0.01)(1234)
        0.01
    """

    value: float

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = check_coefficient("value", value)

    def forward(self, episode: int) -> float:
        """Return the constant coefficient; ``episode`` (int >= 0) is only validated."""
        if not torch.jit.is_scripting():
            episode = _check_episode_type(episode)
        _check_episode(episode)
        return self.value

    @torch.jit.export
    def coefficient_tensor(self, episode: Tensor) -> Tensor:
        """The constant as a 0-dim float64 tensor on ``episode``'s device."""
        return torch.full_like(_as_float64(episode), self.value)

    def extra_repr(self) -> str:
        return f"value={self.value!r}"


class CosineEntropySchedule(_DecaySchedule):
    """Cosine decay of the entropy coefficient from ``start`` to ``end``.

    For an episode ``e >= 0`` and ``N = decay_episodes``::

        coeff(e) = end + (start - end) * 0.5 * (1 + cos(pi * e / N))   if e < N
        coeff(e) = end                                                  otherwise

    It stays near ``start`` longer than the linear ramp and flattens out
    towards ``end`` (SGDR's cosine annealing, without restarts).

    Args:
        start: coefficient at episode 0 (dimensionless, finite, >= 0).
        end: coefficient from episode ``decay_episodes`` on (finite, >= 0).
        decay_episodes: length of the decay, in episodes (int >= 0; 0: always ``end``).

    Raises:
        TypeError, ValueError: as :class:`LinearEntropySchedule`.

    Example::

        >>> schedule = CosineEntropySchedule(0.1, 0.0, 100)
        >>> schedule(0), round(schedule(50), 12), schedule(100)
        (0.1, 0.05, 0.0)
    """

    def _curve(self, episode: int) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * episode / self.decay_episodes))

    def _curve_tensor(self, e: Tensor) -> Tensor:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + torch.cos(math.pi * e / self.decay_episodes))


class ExponentialEntropySchedule(_DecaySchedule):
    """Exponential (geometric) decay of the entropy coefficient from ``start`` to ``end``.

    For an episode ``e >= 0`` and ``N = decay_episodes``::

        coeff(e) = start * (end / start) ** (e / N)   if e < N
        coeff(e) = end                                 otherwise

    The coefficient falls by the same factor every episode, so each decade takes
    the same number of episodes (0.1 -> 0.01 as long as 0.01 -> 0.001).

    Args:
        start: coefficient at episode 0 (finite, > 0).
        end: coefficient from episode ``decay_episodes`` on (finite, > 0).
        decay_episodes: length of the decay, in episodes (int >= 0; 0: always ``end``).

    Raises:
        TypeError: as :class:`LinearEntropySchedule`.
        ValueError: ``start`` or ``end`` is not > 0 (a geometric decay never reaches 0),
            or an argument is not finite, or ``decay_episodes`` is negative.

    Example::

        >>> schedule = ExponentialEntropySchedule(0.1, 0.001, 100)
        >>> schedule(0), round(schedule(50), 12), schedule(100)
        (0.1, 0.01, 0.001)
    """

    def __init__(self, start: float, end: float, decay_episodes: int) -> None:
        # Checked before the base class assigns anything.
        check_positive_coefficient("start", start, "for an exponential schedule")
        check_positive_coefficient("end", end, "for an exponential schedule")
        super().__init__(start, end, decay_episodes)

    def _curve(self, episode: int) -> float:
        return self.start * (self.end / self.start) ** (episode / self.decay_episodes)

    def _curve_tensor(self, e: Tensor) -> Tensor:
        return self.start * torch.pow(self.end / self.start, e / self.decay_episodes)


class PiecewiseEntropySchedule(nn.Module):
    """Piecewise-linear entropy coefficient through given ``[episode, value]`` points.

    With points ``(e_0, v_0), ..., (e_n, v_n)`` (RLlib's ``PiecewiseSchedule`` format,
    episodes strictly increasing)::

        coeff(e) = v_0                                   if e <= e_0
        coeff(e) = v_i * (1 - f) + v_{i+1} * f           if e_i <= e < e_{i+1},
                                                         f = (e - e_i) / (e_{i+1} - e_i)
        coeff(e) = v_n                                   if e >= e_n

    so ``[[0, start], [N, end]]`` is :class:`LinearEntropySchedule` ``(start, end, N)``.

    Args:
        points: a list (or tuple) of ``[episode, value]`` pairs: episodes are
            integers >= 0 in strictly increasing order, values finite and >= 0.

    Raises:
        TypeError: ``points`` is not a list of pairs, or a pair holds a non-number.
        ValueError: no points, a negative or non-finite number, or episodes not increasing.
            The message names the pair, e.g. ``points[2][0] (episode)``.

    Example::

        >>> schedule = PiecewiseEntropySchedule([[0, 0.1], [100, 0.01], [300, 0.0]])
        >>> schedule(0), round(schedule(50), 12), schedule(200), schedule(1000)
        (0.1, 0.055, 0.005, 0.0)
    """

    __jit_unused_properties__ = ["points"]

    episodes: List[int]
    values: List[float]

    def __init__(self, points: Sequence[Sequence[float]]) -> None:
        super().__init__()
        self.episodes, self.values = check_points("points", points)

    @property
    def points(self) -> List[List[float]]:
        """The ``[episode, value]`` pairs, as given (validated)."""
        return [[e, v] for e, v in zip(self.episodes, self.values)]

    def forward(self, episode: int) -> float:
        """Return the coefficient for ``episode`` (an int >= 0); errors as the linear schedule's."""
        if not torch.jit.is_scripting():
            episode = _check_episode_type(episode)
        _check_episode(episode)
        last = len(self.episodes) - 1
        if episode <= self.episodes[0]:
            return self.values[0]
        if episode >= self.episodes[last]:
            return self.values[last]
        i = 0
        while self.episodes[i + 1] <= episode:
            i += 1
        fraction = (episode - self.episodes[i]) / (self.episodes[i + 1] - self.episodes[i])
        return self.values[i] * (1.0 - fraction) + self.values[i + 1] * fraction

    @torch.jit.export
    def coefficient_tensor(self, episode: Tensor) -> Tensor:
        """``forward`` on a 0-dim integer tensor, as a 0-dim float64 tensor on its device.

        One masked select per segment (no search on the host), bitwise equal to ``forward``.
        """
        e = _as_float64(episode)
        result = torch.full_like(e, self.values[0])
        for i in range(len(self.episodes) - 1):
            fraction = (e - self.episodes[i]) / (self.episodes[i + 1] - self.episodes[i])
            segment = self.values[i] * (1.0 - fraction) + self.values[i + 1] * fraction
            inside = torch.logical_and(episode >= self.episodes[i], episode < self.episodes[i + 1])
            result = torch.where(inside, segment, result)
        last = len(self.episodes) - 1
        return torch.where(episode >= self.episodes[last], torch.full_like(e, self.values[last]), result)

    def extra_repr(self) -> str:
        return f"points={self.points!r}"
